"""Worker cases of tests/test_megatron.py, run on every gloo rank (tests/gloo_spawn.py): build a
small Megatron-Core GPTModel (dense, or MoE with sequential or grouped experts) under a tensor-
/ pipeline- / expert-parallel layout, initialize it - by fusedinit (`deferred_init` +
`fusedinit.megatron.materialize_`) or by Megatron itself - then gather each global tensor from
the ranks' shards using Megatron's own `sharded_state_dict()` description, and save them on
rank 0 for the test to compare."""
from __future__ import annotations

import functools
import os
import warnings

import torch
import torch.distributed as dist

LAYERS = 4  # tests/test_megatron.py's scaled std assumes 4


def _spec(model: str):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    if model == "dense":
        return get_gpt_layer_local_spec()
    return get_gpt_layer_local_spec(num_experts=4, moe_grouped_gemm=model == "grouped")


def config(model: str, tp: int, pp: int, ep: int, **overrides):
    from megatron.core.transformer import TransformerConfig
    kw = dict(num_layers=LAYERS, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
              use_cpu_initialization=True, init_method_std=0.02, gated_linear_unit=True,
              tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
              pipeline_dtype=torch.float32)
    if model != "dense":
        kw.update(num_moe_experts=4, moe_router_topk=2, moe_ffn_hidden_size=64,
                  add_bias_linear=False, expert_model_parallel_size=ep,
                  moe_grouped_gemm=model == "grouped",
                  expert_tensor_parallel_size=1 if ep > 1 else tp)
    kw.update(overrides)
    return TransformerConfig(**kw)


def _allow_grouped_gemm() -> None:
    """GroupedMLP's constructor asserts the grouped_gemm CUDA package is installed, which only
    its forward uses; construction and init (what these tests check) need none of it."""
    from megatron.core.transformer.moe import grouped_gemm_util
    grouped_gemm_util.assert_grouped_gemm_is_available = lambda: None


def setup(tp: int, pp: int, ep: int) -> None:
    warnings.filterwarnings("ignore")
    from megatron.core import parallel_state as ps
    if ps.model_parallel_is_initialized():
        assert ps.get_tensor_model_parallel_world_size() == tp
        return
    ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                 expert_model_parallel_size=ep,
                                 expert_tensor_parallel_size=1 if ep > 1 else None)


def build(model: str, how: str, tp: int, pp: int, ep: int, seed: int = 1234, **overrides):
    """This rank's GPTModel, initialized `how`: "fused" (deferred_init + materialize_),
    "megatron" (Megatron's own init with torch seeded `seed` on every rank, as its CPU
    initialization expects) or "deferred" (recorded, not materialized)."""
    import fusedinit
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel
    if model == "grouped":
        _allow_grouped_gemm()
    model_options = {k: overrides.pop(k) for k in ("share_embeddings_and_output_weights",)
                     if k in overrides}  # GPTModel's, not the config's
    make = functools.partial(GPTModel, config(model, tp, pp, ep, **overrides), _spec(model),
                             vocab_size=128, max_sequence_length=32, **model_options,
                             pre_process=ps.is_pipeline_first_stage(),
                             post_process=ps.is_pipeline_last_stage())
    if how == "megatron":
        torch.manual_seed(seed)
        return make()
    gpt = fusedinit.deferred_init(make)
    if how == "fused":
        fusedinit.megatron.materialize_(gpt, device="cpu", seed=seed)
    return gpt


def blocks(gpt) -> list:
    """(key, global shape, global offset, local data) of every ShardedTensor of this rank,
    factories built, replicas (replica_id not all zero) left out."""
    from fusedinit.megatron.places import _is_factory, _is_sharded_tensor, _leaves
    out = []
    for leaf in _leaves(gpt.sharded_state_dict()):
        built = list(_leaves([leaf.build()])) if _is_factory(leaf) else [leaf]
        for st in built:
            if not _is_sharded_tensor(st):
                continue
            replica = st.replica_id if isinstance(st.replica_id, tuple) else (st.replica_id,)
            if any(replica):
                continue
            shape = (1,) * st.prepend_axis_num + tuple(st.data.shape)
            out.append((st.key, tuple(st.global_shape), tuple(st.global_offset),
                        st.data.detach().reshape(shape).clone()))
    return out


def gathered(gpt) -> dict:
    """On rank 0: every global tensor, assembled from all ranks' blocks (each element written
    exactly once, checked); None elsewhere."""
    mine = blocks(gpt)
    everything = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, everything, dst=0)
    if dist.get_rank() != 0:
        return None
    tensors, counts = {}, {}
    for rank_blocks in everything:
        for key, shape, offset, data in rank_blocks:
            g = tensors.setdefault(key, torch.zeros(shape, dtype=data.dtype))
            c = counts.setdefault(key, torch.zeros(shape, dtype=torch.int32))
            where = tuple(slice(o, o + n) for o, n in zip(offset, data.shape))
            g[where] = data
            c[where] += 1
    for key, c in counts.items():
        assert bool((c == 1).all()), f"{key}: elements written {int(c.min())}..{int(c.max())} times"
    return tensors


# Custom init methods a test may name (init=NAME): torch.nn.init functions Megatron users pass
# as config.init_method / output_layer_init_method.
CUSTOM_INITS = {
    "xavier": dict(init_method=torch.nn.init.xavier_uniform_,
                   output_layer_init_method=functools.partial(torch.nn.init.trunc_normal_,
                                                              std=0.01, a=-0.02, b=0.02)),
}


def _gpu_init_on_cpu() -> None:
    """Megatron's default (GPU) initialization, on this CPU: each rank's init_method runs on
    its local shard under the CUDA RNG tracker's fork. The stand-ins: the "current CUDA device"
    is the CPU and the tracker's fork is a no-op (it only swaps CUDA generator states)."""
    import contextlib
    from megatron.core.tensor_parallel import random as mrandom
    torch.cuda.current_device = lambda: "cpu"
    mrandom.get_cuda_rng_tracker().fork = lambda *a, **k: contextlib.nullcontext()


def save_case(argument: str) -> None:
    """argument: how,model,tp,pp,ep,path[,option=value...] - build, gather, save on rank 0.
    Options are TransformerConfig fields (True / False / ints), init=NAME (CUSTOM_INITS) and
    gpu_init=True (Megatron's GPU initialization path, see _gpu_init_on_cpu)."""
    how, model, tp, pp, ep, path, *extra = argument.split(",")
    tp, pp, ep = int(tp), int(pp), int(ep)
    overrides = {}
    for item in extra:
        k, v = item.split("=")
        if k == "init":
            overrides.update(CUSTOM_INITS[v])
        elif k == "gpu_init":
            _gpu_init_on_cpu()
            overrides["use_cpu_initialization"] = False
        else:
            overrides[k] = {"True": True, "False": False}.get(v, int(v) if v.isdigit() else v)
    assert dist.get_world_size() % (tp * pp) == 0
    setup(tp, pp, ep)
    gpt = build(model, how, tp, pp, ep, **overrides)
    result = gathered(gpt)
    if result is not None:
        torch.save(result, path)


def singles_case(folder: str) -> None:
    """On one rank (TP = PP = EP = 1): fusedinit's dense, MoE and grouped-MoE models and
    Megatron's own dense and MoE models, saved as `{how}-{model}.pt` in `folder` (one process
    for all five: each spawn costs seconds of imports)."""
    setup(1, 1, 1)
    for how, model in (("fused", "dense"), ("fused", "moe"), ("fused", "grouped"),
                       ("megatron", "dense"), ("megatron", "moe")):
        torch.save(gathered(build(model, how, 1, 1, 1)), os.path.join(folder, f"{how}-{model}.pt"))


def attributes_case() -> None:
    """Every parameter keeps what Megatron's constructor set on it (tensor_model_parallel,
    partition_dim, partition_stride, allreduce, sequence_parallel, ...: its DDP and optimizers
    read them), its type and requires_grad - as Megatron's own build has them."""
    setup(1, 1, 1)
    for model in ("moe", "grouped"):
        theirs = dict(build(model, "megatron", 1, 1, 1).named_parameters())
        ours = dict(build(model, "fused", 1, 1, 1).named_parameters())
        assert list(theirs) == list(ours)
        for name, p in theirs.items():
            q = ours[name]
            assert vars(p) == vars(q), (name, vars(p), vars(q))
            assert type(p) is type(q) and p.requires_grad == q.requires_grad, name
        assert any(vars(p) for p in ours.values())


def half_precision_case() -> None:
    """float16 / bfloat16 parameters (Megatron casts each master weight with
    `.to(params_dtype)`: freed temporaries whose storage addresses later parameters reuse -
    they once inherited a temporary's "written by an op" at random): every build records every
    parameter, and the values are the contract's in that dtype."""
    from fusedinit.models.streams import param_stream
    setup(1, 1, 1)
    for dtype in (torch.float16, torch.bfloat16):
        for _ in range(3):
            gpt = build("moe", "fused", 1, 1, 1, params_dtype=dtype, pipeline_dtype=dtype,
                        fp16=dtype == torch.float16, bf16=dtype == torch.bfloat16)
        qkv = gathered(gpt)["decoder.layers.self_attention.linear_qkv.weight"]
        assert qkv.dtype == dtype
        import fusedinit
        key = "decoder.layers.self_attention.linear_qkv.weight"
        expected = fusedinit.normal_(torch.empty(qkv.shape, dtype=dtype), 0.0, 0.02, seed=1234,
                                     stream=param_stream(key), backend="reference")
        assert torch.equal(qkv.view(torch.int16), expected.view(torch.int16))


def _refused(call, *needles: str) -> None:
    try:
        call()
    except ValueError as exc:
        assert all(n in str(exc) for n in needles), exc
    else:
        raise AssertionError(f"not refused; expected an error naming {needles}")


def two_rank_refusals_case() -> None:
    """On 2 ranks (TP=2): a fan-based init method (xavier_uniform_) under Megatron's GPU
    initialization sees this rank's shard, and GroupedMLP's CPU initialization sees this rank's
    experts - a layout-dependent rule, named; a seed left to torch's generator is refused
    (ranks seed torch differently). The model stays on meta."""
    import fusedinit
    setup(2, 1, 1)
    custom = CUSTOM_INITS["xavier"]
    torch_current_device = torch.cuda.current_device
    _gpu_init_on_cpu()
    gpt = build("dense", "deferred", 2, 1, 1, use_cpu_initialization=False, **custom)
    torch.cuda.current_device = torch_current_device
    _refused(lambda: fusedinit.megatron.materialize_(gpt, device="cpu", seed=1),
             "decoder.layers.0.self_attention.linear_qkv.weight (", "config.init_method",
             "use_cpu_initialization=True")
    assert all(p.device.type == "meta" for p in gpt.parameters())
    gpt = build("grouped", "deferred", 2, 1, 1, **custom)
    _refused(lambda: fusedinit.megatron.materialize_(gpt, device="cpu", seed=1),
             "decoder.layers.0.mlp.experts.weight1")
    gpt = build("dense", "deferred", 2, 1, 1, **custom)  # CPU initialization: layout-free
    _refused(lambda: fusedinit.megatron.materialize_(gpt, device="cpu"), "seed must be given")
    fusedinit.megatron.materialize_(gpt, device="cpu", seed=1)


def single_rank_checks_case() -> None:
    """The one-rank checks, in one process."""
    half_precision_case()
    attributes_case()
    no_master_case()
    uninitialized_case()
    refusal_case()


def op_calls_case(argument: str) -> None:
    """materialize_ makes one fusedinit op call on this rank (CPU)."""
    import fusedinit
    model, tp, pp, ep = argument.split(",")
    setup(int(tp), int(pp), int(ep))
    if model == "grouped":
        _allow_grouped_gemm()
    calls = []

    class Count(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "fusedinit":
                calls.append(func)
            return func(*args, **(kwargs or {}))

    gpt = build(model, "deferred", int(tp), int(pp), int(ep))
    with Count():
        fusedinit.megatron.materialize_(gpt, device="cpu", seed=3)
    assert len(calls) == 1, calls
    assert all(p.device.type == "cpu" for p in gpt.parameters())


def _peak_rss_mib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def no_master_case() -> None:
    """A GPT whose CPU initialization would draw a 32 GiB master embedding (2^20 x 8192, more
    than this machine has) and 1 GiB master weights per layer: deferred_init records it with
    no allocation, and every parameter has its global place (on meta)."""
    import fusedinit
    from megatron.core.models.gpt import GPTModel
    setup(1, 1, 1)
    before = _peak_rss_mib()
    gpt = fusedinit.deferred_init(GPTModel, config("dense", 1, 1, 1, num_layers=2,
                                                   hidden_size=8192, ffn_hidden_size=32768,
                                                   num_attention_heads=64),
                                  _spec("dense"), vocab_size=1 << 20, max_sequence_length=4096)
    places = fusedinit.megatron.global_places(gpt)
    grown = _peak_rss_mib() - before
    assert all(p.device.type == "meta" for p in gpt.parameters())
    (block,) = places["embedding.word_embeddings.weight"]
    assert block.global_shape == (1 << 20, 8192), block
    assert grown < 64, f"peak RSS grew {grown:.0f} MiB"


def uninitialized_case() -> None:
    """perform_initialization=False: Megatron's constructor writes no weights, so materialize_
    names them (and says why) and leaves the model as it was; with init= it writes them, at
    their global places like the rest."""
    import fusedinit
    setup(1, 1, 1)
    gpt = build("dense", "deferred", 1, 1, 1, perform_initialization=False)
    try:
        fusedinit.megatron.materialize_(gpt, device="cpu", seed=1)
    except RuntimeError as exc:
        message = str(exc)
    else:
        raise AssertionError("materialize_ wrote a model whose weights nothing initialized")
    assert "perform_initialization is False" in message, message
    assert "decoder.layers.0.self_attention.linear_qkv.weight" in message, message
    assert all(p.device.type == "meta" for p in gpt.parameters())

    def init(m):
        for name, p in m.named_parameters():
            if p.dim() > 1:
                m.config.init_method(p)
            elif "norm" in name and name.endswith("weight"):
                torch.nn.init.ones_(p)
            else:
                torch.nn.init.zeros_(p)

    fusedinit.megatron.materialize_(gpt, device="cpu", seed=1, init=init)
    qkv = gpt.decoder.layers[0].self_attention.linear_qkv.weight.detach()
    (block,) = fusedinit.megatron.global_places(gpt)[
        "decoder.layers.0.self_attention.linear_qkv.weight"]
    from fusedinit.models.streams import param_stream
    expected = fusedinit.normal_(torch.empty(block.global_shape), 0.0, 0.02, seed=1,
                                 stream=param_stream(block.key), backend="reference")[0]
    assert torch.equal(qkv, expected)


def refusal_case() -> None:
    """What cannot be placed is named: a parameter sharded_state_dict() does not describe (a
    module whose description leaves one out), a model that is not Megatron's; nothing is
    written. (A plain submodule added by hand is described: Megatron's default gives it a
    replicated key of its own.)"""
    import fusedinit
    setup(1, 1, 1)
    gpt = build("dense", "deferred", 1, 1, 1)
    gpt.decoder.extra = torch.nn.Linear(4, 4, device="meta")
    places = fusedinit.megatron.global_places(gpt)
    assert [b.key for b in places["decoder.extra.weight"]] == ["decoder.extra.weight"]
    described = gpt.sharded_state_dict
    gpt.sharded_state_dict = lambda *a, **k: {
        k: v for k, v in described(*a, **k).items() if k != "output_layer.weight"}
    try:
        fusedinit.megatron.materialize_(gpt, device="cpu", seed=1)
    except ValueError as exc:
        assert "output_layer.weight" in str(exc) and "parallel layout" in str(exc), exc
    else:
        raise AssertionError("a parameter with no global place was written")
    assert all(p.device.type == "meta" for p in gpt.parameters())
    try:
        fusedinit.megatron.materialize_(torch.nn.Linear(2, 2, device="meta"), device="cpu",
                                        seed=1, init=lambda m: None)
    except TypeError as exc:
        assert "sharded_state_dict" in str(exc), exc
    else:
        raise AssertionError("a plain module was accepted")
    tied = build("dense", "deferred", 1, 1, 1, share_embeddings_and_output_weights=True)
    tied.pre_process = False  # as on the last pipeline stage (Megatron cannot build it on CPU)
    _refused(lambda: fusedinit.megatron.materialize_(tied, device="cpu", seed=1),
             "output_layer.weight is tied")
    built = build("dense", "megatron", 1, 1, 1)
    before = {n: p.detach().clone() for n, p in built.named_parameters()}
    _refused(lambda: fusedinit.megatron.materialize_(built, device="cpu", seed=1),
             "not built by fusedinit.deferred_init")
    assert all(torch.equal(p, before[n]) for n, p in built.named_parameters())


if __name__ == "__main__":  # a quick look by hand: python tests/megatron_workers.py
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    save_case("fused,moe,1,1,1,/dev/null")
