"""Worker bodies for test_distributed.py: each runs in its own process of a gloo group on CPU
and raises (non-zero exit) on any mismatch. Expected values come from the pure-PyTorch
reference on the unsharded tensor, with the spec written out here (or read off the stock
transformers pass by hf_rules), so a defect shared by every fusedinit path - the model rules,
the padding row - cannot pass by agreeing with itself."""
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, init_device_mesh
from torch.utils._python_dispatch import TorchDispatchMode

import fusedinit

SPECS = [fusedinit.Normal(0.1, 1.5, stream=5), fusedinit.Uniform(-1, 2, stream=6),
         fusedinit.TruncNormal(0, 1, -1.5, 0.5, stream=7), fusedinit.Constant(0.25),
         fusedinit.Normal(0, 0.02, padding_idx=4, stream=8)]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPE = (37, 23)  # divides evenly by none of 2, 3, 4
# Padding rows away from rank 0's shard. Shard(0) cuts the 37 rows at 19 (2 ranks), 13 / 26
# (3 ranks), 10 / 20 / 30 (4 ranks): 19, 13, 20 and -11 (= 26) are the first row of a later
# shard for some world size, 19 the last of one, and 13, 19, 20 inside a middle shard.
PADDING_SPECS = [fusedinit.Normal(0.5, 2.0, padding_idx=row, stream=9) for row in (19, 13, 20, -11)]


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


_REFERENCE = {}  # (shape, dtype, spec, seed) -> the reference's values of the whole tensor


def reference_values(shape, dtype, spec, seed):
    key = (tuple(shape), dtype, spec, seed)
    if key not in _REFERENCE:
        _REFERENCE[key] = fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)],
                                               seed=seed, backend="reference")[0]
    return _REFERENCE[key]


def _compare(full, expected, what):
    if full.shape != expected.shape or full.dtype != expected.dtype:
        raise AssertionError(f"rank {dist.get_rank()}: {what}: {full.dtype} {tuple(full.shape)} "
                             f"vs {expected.dtype} {tuple(expected.shape)}")
    if not torch.equal(_bits(full.contiguous()), _bits(expected.contiguous())):
        bad = int((_bits(full.contiguous()) != _bits(expected.contiguous())).sum())
        raise AssertionError(f"rank {dist.get_rank()}: {what}: {bad} elements differ")


def _check(dt, spec, seed, what):
    full = dt.full_tensor()  # communication only to check the result
    _compare(full, reference_values(SHAPE, dt.dtype, spec, seed), what)


_COLLECTIVE_NAMESPACES = {"c10d", "_c10d_functional", "_c10d_functional_autograd"}


class NoCollectives(TorchDispatchMode):
    """Any collective or point-to-point communication inside fails the test: initializing must
    need none. Two layers: a dispatch mode raises at once on any c10d / functional-collective
    op (torch.distributed calls and DTensor's functional collectives both dispatch one), and a
    pre-hook on every process group records each collective issued, which __exit__ turns into
    a failure (it also sees collectives a DTensor issues from inside its own dispatch, where
    this mode is not on the stack)."""
    HOOK_ID = 0x5EED

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace in _COLLECTIVE_NAMESPACES:
            raise AssertionError(f"collective communication during initialization: {func}")
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self.issued = []
        # Process-group pre-hooks exist from torch 2.14; before that the dispatch mode alone
        # guards (every ProcessGroup method and DTensor collective dispatches a c10d op).
        self.groups = [g for g in dist.distributed_c10d._world.pg_map
                       if hasattr(g, "register_pre_hook")]
        for group in self.groups:
            group.register_pre_hook(self.HOOK_ID, lambda args: self.issued.append(args.name))
        return super().__enter__()

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        for group in self.groups:
            group.unregister_pre_hook(self.HOOK_ID)
        if self.issued and exc[0] is None:
            raise AssertionError(f"collective communication during initialization: {self.issued}")
        return result


def guard_catches_collectives():
    """NoCollectives itself: a DTensor full_tensor() (functional collective), a
    torch.distributed call and a ProcessGroup method call inside it each fail."""
    world = dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    dt = torch.distributed.tensor.ones(SHAPE, device_mesh=mesh, placements=[Shard(0)])
    attempts = {
        "full_tensor": lambda: dt.full_tensor(),
        "redistribute": lambda: dt.redistribute(mesh, [Replicate()]).to_local(),
        "all_reduce": lambda: dist.all_reduce(torch.ones(3)),
        "ProcessGroup.allreduce": lambda: mesh.get_group().allreduce([torch.ones(3)]).wait(),
        "barrier": lambda: dist.barrier(),
    }
    for name, attempt in attempts.items():
        try:
            with NoCollectives():
                attempt()
        except AssertionError as exc:
            assert "collective communication" in str(exc), exc
        else:
            raise AssertionError(f"NoCollectives let {name} through")
        dist.barrier()  # every rank attempted (and was stopped before sending): in step again
    with NoCollectives():
        fusedinit.normal_(dt, seed=1)  # and the guard lets an init through


def _meshes(world):
    yield "1d", init_device_mesh("cpu", (world,)), [[Shard(0)], [Shard(1)], [Replicate()]]
    if world == 4:
        yield "2x2", init_device_mesh("cpu", (2, 2)), [
            [Shard(0), Shard(1)], [Shard(1), Shard(0)], [Shard(0), Shard(0)], [Replicate(), Shard(1)]]


def dtensor_cases():
    world = dist.get_world_size()
    for mesh_name, mesh, placement_sets in _meshes(world):
        for placements in placement_sets:
            for dtype in DTYPES:
                for i, spec in enumerate(SPECS):
                    dt = torch.distributed.tensor.empty(SHAPE, dtype=dtype, device_mesh=mesh,
                                                       placements=placements)
                    seed = 1000 + i
                    with NoCollectives():
                        fusedinit.init_many_([(dt, spec)], seed=seed)
                    _check(dt, spec, seed, f"{mesh_name} {placements} {dtype} {spec}")
            for dtype in (torch.float32, torch.bfloat16):
                for spec in PADDING_SPECS:
                    dt = torch.distributed.tensor.empty(SHAPE, dtype=dtype, device_mesh=mesh,
                                                       placements=placements)
                    with NoCollectives():
                        fusedinit.init_many_([(dt, spec)], seed=77)
                    _check(dt, spec, 77, f"{mesh_name} {placements} {dtype} {spec}")
    # A Partial DTensor is refused, untouched.
    mesh = init_device_mesh("cpu", (world,))
    local = torch.arange(SHAPE[0] * SHAPE[1], dtype=torch.float32).view(SHAPE)
    before = local.clone()
    partial = DTensor.from_local(local, mesh, [Partial()])
    try:
        fusedinit.normal_(partial, seed=1)
    except ValueError as exc:
        assert "Partial" in str(exc)
    else:
        raise AssertionError("a Partial DTensor must be refused")
    assert torch.equal(_bits(local), _bits(before)), "a refused Partial DTensor was written"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        # FSDP2 shards dim 0: row 19 opens rank 1's shard on 2 ranks, sits inside it on 3.
        self.emb = torch.nn.Embedding(37, 24, padding_idx=19)
        self.layers = torch.nn.ModuleList(
            [torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.LayerNorm(40),
                                 torch.nn.Linear(40, 24, bias=False)) for _ in range(3)])
        self.experts = torch.nn.Parameter(torch.empty(5, 24, 7))


def fsdp2_init_module():
    from torch.distributed.fsdp import fully_shard

    world = dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    with torch.device("meta"):
        model = Net()
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    with NoCollectives():
        fusedinit.init_module_(model, std=0.05, seed=77)
    specs = net_specs(0.05)
    state = model.state_dict()
    if set(state) != set(specs):
        raise AssertionError(f"state {sorted(state)} vs specs {sorted(specs)}")
    for name, value in state.items():
        full = value.full_tensor() if isinstance(value, DTensor) else value
        _compare(full, reference_values(full.shape, full.dtype, specs[name], 77), f"FSDP2 {name}")


def net_specs(std):
    """What init_module_ writes to each tensor of Net (Hugging Face's base rules), by name."""
    def normal(name, **kwargs):
        return fusedinit.Normal(0.0, std, stream=fusedinit.param_stream(name), **kwargs)

    specs = {"emb.weight": normal("emb.weight", padding_idx=19),
             "experts": normal("experts")}
    for i in range(3):
        specs.update({f"layers.{i}.0.weight": normal(f"layers.{i}.0.weight"),
                      f"layers.{i}.0.bias": fusedinit.Constant(0.0),
                      f"layers.{i}.1.weight": fusedinit.Constant(1.0),
                      f"layers.{i}.1.bias": fusedinit.Constant(0.0),
                      f"layers.{i}.2.weight": normal(f"layers.{i}.2.weight")})
    return specs


def llama_specs(config):
    """Each Llama parameter's spec, from the rule the stock transformers pass applies to it
    (hf_rules logs its writes; independent of fusedinit's recorder)."""
    import transformers as tf
    from hf_rules import stock_with_rules

    _, rules = stock_with_rules(tf.LlamaForCausalLM, config)
    specs = {}
    for name, rule in rules.items():
        stream = fusedinit.param_stream(name)
        if rule is None:
            raise AssertionError(f"{name}: the stock pass writes it in a way hf_rules cannot read")
        specs[name] = {
            "normal": lambda: fusedinit.Normal(rule.a, rule.b, padding_idx=rule.padding_row,
                                               stream=stream),
            "uniform": lambda: fusedinit.Uniform(rule.a, rule.b, stream=stream),
            "trunc_normal": lambda: fusedinit.TruncNormal(rule.a, rule.b, rule.low, rule.high,
                                                          stream=stream),
            "constant": lambda: fusedinit.Constant(rule.a)}[rule.kind]()
    if specs["model.embed_tokens.weight"].padding_idx != config.pad_token_id:
        raise AssertionError("the stock pass must zero the padding row")
    return specs


def _check_llama(model, config, seed, what):
    """Every parameter (gathered) against the reference; the rest of the state (no
    parameters: buffers) against the unsharded fusedinit model."""
    import transformers as tf

    specs = llama_specs(config)
    params = dict(model.named_parameters())
    if set(params) != set(specs):
        raise AssertionError(f"parameters {sorted(params)} vs specs {sorted(specs)}")
    single = None
    for name, value in model.state_dict().items():
        full = value.full_tensor() if isinstance(value, DTensor) else value
        if name in specs:
            expected = reference_values(full.shape, full.dtype, specs[name], seed)
        elif "rotary" in name:
            continue  # not initialized by the init pass
        else:
            if single is None:
                single = fusedinit.from_config(config, model_class=tf.LlamaForCausalLM, seed=seed)
            expected = single.state_dict()[name]
        _compare(full, expected, f"{what} {name}")


def fsdp2_llama_from_config():
    import transformers as tf

    config = tf.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2, vocab_size=301,
                            pad_token_id=151)  # opens rank 1's shard (2 ranks), inside it (3)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    with NoCollectives():
        sharded = fusedinit.from_config(config, model_class=tf.LlamaForCausalLM, seed=9,
                                        device_mesh=mesh)
    assert isinstance(sharded.model.embed_tokens.weight, DTensor)
    _check_llama(sharded, config, 9, "FSDP2 Llama")


def fsdp2_llama_user_wrapped():
    """A transformers model built on meta by the user, wrapped with fully_shard and
    materialized with to_empty, then initialized by its own (patched) init pass."""
    import transformers as tf
    from torch.distributed.fsdp import fully_shard

    config = tf.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2, vocab_size=301,
                            pad_token_id=151)  # opens rank 1's shard (2 ranks), inside it (3)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    with torch.device("meta"):
        model = tf.LlamaForCausalLM(config)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    for module in model.modules():  # transformers 4.57 marks modules initialized even on meta
        module.__dict__.pop("_is_hf_initialized", None)
    with NoCollectives(), fusedinit.patched_transformers(seed=9):
        model.initialize_weights()
    _check_llama(model, config, 9, "user-wrapped FSDP2 Llama")
