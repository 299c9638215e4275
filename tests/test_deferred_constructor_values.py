"""deferred_init records what a constructor computes before it registers a parameter: factory
values (zeros, ones, full, empty, randn, rand, normal, *_like) with in-place init writes and
scalar arithmetic are recorded as that spec on the final name's stream, constants exactly;
nothing of parameter size is allocated; buffers are computed for real; anything else is named
by materialize_, never guessed."""
import math

import pytest
import torch
from torch import nn

import fusedinit
from conftest import assert_bitwise_equal
from fusedinit import param_stream
from fusedinit.models.deferred import deferred_record
from fusedinit.ops.specs import Constant, Normal, Uniform

SEED = 7
D, N = 16, 6


class Idioms(nn.Module):
    def __init__(self, device=None):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D, device=device))
        self.pos = nn.Parameter(torch.empty(1, N, D, device=device).normal_(std=0.02))
        self.logit_scale = nn.Parameter(torch.ones([], device=device) * math.log(1 / 0.07))
        self.gamma = nn.Parameter(1e-5 * torch.ones(D, device=device))
        self.w = nn.Parameter(torch.randn(D, 4, device=device) * D ** -0.5)
        self.u = nn.Parameter((torch.rand(D, device=device) - 0.5) * 2)
        self.shift = nn.Parameter(3.0 - torch.full((D,), 0.1, device=device))
        self.scalar = nn.Parameter(torch.tensor(2.5))
        pe = torch.zeros(N, D, device=device)
        pos = torch.arange(N, device=device).float()[:, None]
        pe[:, 0::2] = torch.sin(pos / 100)
        pe[:, 1::2] = torch.cos(pos / 100)
        self.register_buffer("pe", pe)
        self.register_buffer("mask", torch.ones(N, N, device=device).tril())
        self.lin = nn.Linear(D, D, device=device)


def _stock_pe():
    pe = torch.zeros(N, D)
    pos = torch.arange(N).float()[:, None]
    pe[:, 0::2] = torch.sin(pos / 100)
    pe[:, 1::2] = torch.cos(pos / 100)
    return pe


def test_values_computed_before_registration_are_recorded():
    model = fusedinit.deferred_init(Idioms)
    assert all(p.is_meta for p in model.parameters())
    record = deferred_record(model)
    specs = {k: (type(v), getattr(v, "value", None)) for k, v in record.specs.items()}
    assert specs["cls_token"] == (Constant, 0.0)
    # Constants exactly as torch computes them in float32.
    assert specs["logit_scale"] == (Constant, (torch.ones([]) * math.log(1 / 0.07)).item())
    assert specs["gamma"] == (Constant, (1e-5 * torch.ones(1)).item())
    assert specs["shift"] == (Constant, (3.0 - torch.full((1,), 0.1)).item())
    pos, w, u = record.specs["pos"], record.specs["w"], record.specs["u"]
    assert isinstance(pos, Normal) and (pos.mean, pos.std) == (0.0, 0.02)
    assert isinstance(w, Normal) and w.mean == 0.0 and math.isclose(w.std, D ** -0.5)
    assert isinstance(u, Uniform) and (u.a, u.b) == (-1.0, 1.0)
    assert_bitwise_equal(record.values["scalar"], torch.tensor(2.5))
    assert not record.unrecorded
    # Buffers were computed for real, as stock torch computes them.
    assert_bitwise_equal(model.pe, _stock_pe())
    assert_bitwise_equal(model.mask, torch.ones(N, N).tril())


def test_materialize_writes_the_recorded_rules_in_one_op_call(op_calls):
    model = fusedinit.materialize_(fusedinit.deferred_init(Idioms), device="cpu", seed=SEED)
    assert op_calls == [9], op_calls  # every floating parameter but the kept one, one call
    expected = fusedinit.normal_(torch.empty(1, N, D), 0.0, 0.02, seed=SEED,
                                 stream=param_stream("pos"))
    assert_bitwise_equal(model.pos.detach(), expected)
    expected = fusedinit.uniform_(torch.empty(D), -1.0, 1.0, seed=SEED, stream=param_stream("u"))
    assert_bitwise_equal(model.u.detach(), expected)
    assert_bitwise_equal(model.cls_token.detach(), torch.zeros(1, 1, D))
    assert float(model.logit_scale) == (torch.ones([]) * math.log(1 / 0.07)).item()
    assert float(model.scalar) == 2.5
    assert_bitwise_equal(model.pe, _stock_pe())
    again = fusedinit.materialize_(fusedinit.deferred_init(Idioms), device="cpu", seed=SEED)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert_bitwise_equal(a, b, name)


def test_a_cuda_constructor_is_deferred_on_a_machine_without_a_gpu():
    """Factories asked for "cuda" make meta tensors: the model is recorded, its buffers are
    computed on the CPU (materialize_ moves them to the device it is given)."""
    model = fusedinit.deferred_init(Idioms, device="cuda")
    assert model.pos.is_meta and model.pe.device.type in ("cpu", "cuda")
    model = fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert_bitwise_equal(model.pe, _stock_pe())


def test_nothing_of_parameter_size_is_allocated():
    """A draw of 2^40 elements (4 TiB) before registration: stock torch cannot even allocate
    it; deferred_init records it."""
    class Huge(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(2**20, 2**20) * 0.02)
            self.b = nn.Parameter(torch.zeros(2**20, 2**20))

    model = fusedinit.deferred_init(Huge)
    record = deferred_record(model)
    assert isinstance(record.specs["w"], Normal) and math.isclose(record.specs["w"].std, 0.02)
    assert record.specs["b"] == Constant(0.0)


class Unrecordable(nn.Module):
    def __init__(self):
        super().__init__()
        self.ok = nn.Parameter(torch.randn(8) * 2)
        self.exp = nn.Parameter(torch.randn(8).exp())           # a draw, then a non-affine op
        self.mixed = nn.Parameter(torch.randn(8) * torch.rand(8))  # two draws multiplied
        self.empty = nn.Parameter(torch.empty(8))              # nothing ever written


def test_what_cannot_be_recorded_is_named_never_guessed():
    model = fusedinit.deferred_init(Unrecordable)
    record = deferred_record(model)
    assert set(record.unrecorded) == {"exp", "mixed"}
    with pytest.raises(RuntimeError, match="left uninitialized: exp .*mixed .*empty"):
        fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert model.ok.is_meta  # nothing half-done is handed back


def test_a_later_init_write_covers_an_unrecordable_value():
    class Covered(Unrecordable):
        def __init__(self):
            super().__init__()
            for p in (self.exp, self.mixed, self.empty):
                nn.init.ones_(p)

    model = fusedinit.materialize_(fusedinit.deferred_init(Covered), device="cpu", seed=SEED)
    assert bool((model.exp == 1).all()) and bool((model.empty == 1).all())


def test_in_place_scalar_arithmetic_and_chains_on_a_factory_value():
    class Chains(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.randn(64, 64).mul_(0.5))
            self.b = nn.Parameter((torch.rand(32) * 4 - 2) / 2)
            self.c = nn.Parameter(-torch.randn(32) + 1)

    record = deferred_record(fusedinit.deferred_init(Chains))
    b, c = record.specs["b"], record.specs["c"]
    assert isinstance(b, Uniform) and (b.a, b.b) == (-1.0, 1.0)
    assert isinstance(c, Normal) and (c.mean, c.std) == (1.0, 1.0)
    model = fusedinit.materialize_(fusedinit.deferred_init(Chains), device="cpu", seed=SEED)
    # the in-place mul_ on the queued draw is the engine's chain: recorded or named, never
    # a wrong value
    assert model.a.std().item() == pytest.approx(0.5, rel=0.05)


def _rules_match(deferred: nn.Module, stock: nn.Module) -> None:
    """Every parameter of the deferred model follows the stock model's rule: constants bit for
    bit, others with mean and std within bounds from the sample size."""
    for (name, a), b in zip(deferred.named_parameters(), stock.parameters()):
        a, b = a.detach().double().flatten(), b.detach().double().flatten()
        if bool((b == b[0]).all()):
            assert_bitwise_equal(a, b, name)
            continue
        n = a.numel()
        if n < 64:
            continue
        sd = float(b.std())
        assert abs(float(a.mean()) - float(b.mean())) < 8 * sd / math.sqrt(n), name
        assert abs(float(a.std()) / sd - 1) < 8 / math.sqrt(n) + 0.02, name


def test_timm_vision_transformer_as_shipped(op_calls):
    timm = pytest.importorskip("timm")
    kwargs = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
                  num_classes=10, class_token=True, reg_tokens=2)
    torch.manual_seed(0)
    stock = timm.models.vision_transformer.VisionTransformer(**kwargs)
    model = fusedinit.deferred_init(timm.models.vision_transformer.VisionTransformer, **kwargs)
    assert not deferred_record(model).unrecorded, deferred_record(model).unrecorded
    fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert len(op_calls) == 1
    _rules_match(model, stock)
    assert bool(torch.isfinite(model(torch.randn(2, 3, 32, 32))).all())


def test_transformers_clip_as_shipped(op_calls):
    transformers = pytest.importorskip("transformers")
    text = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=16)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                  num_attention_heads=4, image_size=16, patch_size=4)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    torch.manual_seed(0)
    stock = transformers.CLIPModel(config)
    model = fusedinit.deferred_init(transformers.CLIPModel, config)
    fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert len(op_calls) == 1
    _rules_match(model, stock)
    assert float(model.logit_scale) == float(stock.logit_scale)
    out = model(input_ids=torch.randint(0, 99, (2, 5)), pixel_values=torch.randn(2, 3, 16, 16))
    assert bool(torch.isfinite(out.logits_per_image).all())


# -- found by an adversarial probe ---------------------------------------------------------
class Assigned(nn.Module):
    """Index assignment and factories on a ruled tensor's device: torch builds index and value
    tensors on the target's device before dispatch."""

    def __init__(self):
        super().__init__()
        mask = torch.zeros(4, 4)
        mask[torch.ones(4, 4).triu(1).bool()] = float("-inf")
        self.register_buffer("mask", mask)
        w = torch.ones(4)
        w[[0, 2]] = 0.0
        w[1] = 3
        self.p = nn.Parameter(w)
        z = torch.zeros(3)
        self.register_buffer("pos", torch.arange(3, device=z.device) + z)
        self.register_buffer("made", z.new_tensor([1.0, 2.0, 3.0]))
        self.listed = z.tolist()


def test_index_assignment_and_device_following_factories_match_stock():
    torch.manual_seed(0)
    stock = Assigned()
    model = fusedinit.materialize_(fusedinit.deferred_init(Assigned), device="cpu", seed=SEED)
    for name, t in stock.state_dict().items():
        assert_bitwise_equal(model.state_dict()[name], t, name)
    assert model.listed == [0.0, 0.0, 0.0]


class SeededDraws(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.bernoulli(torch.full((8,), 0.5)))
        self.b = nn.Parameter(torch.randint(0, 5, (8,)).float())
        self.c = nn.Parameter(torch.normal(torch.zeros(8), 1.0))
        self.d = nn.Parameter(torch.randn(64).half().float())  # a draw held in 16 bits


def test_draws_of_other_random_ops_are_named_not_kept():
    """Values drawn with torch's generator by ops without a rule depend on torch's RNG, not on
    the seed given to materialize_: named, never kept."""
    record = deferred_record(fusedinit.deferred_init(SeededDraws))
    assert set(record.unrecorded) == {"a", "b", "c", "d"} and not record.values


def test_float64_constants_are_exact():
    class F64(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.full((3,), 0.1, dtype=torch.float64))
            self.b = nn.Parameter(torch.ones(3, dtype=torch.float64) / 3)
            self.c = nn.Parameter(torch.full((3,), 0.5, dtype=torch.float64) * 3)

    torch.manual_seed(0)
    stock = F64()
    model = fusedinit.materialize_(fusedinit.deferred_init(F64), device="cpu", seed=SEED)
    for name, t in stock.state_dict().items():
        assert_bitwise_equal(model.state_dict()[name], t, name)
    assert isinstance(deferred_record(fusedinit.deferred_init(F64)).specs["c"], Constant)


def test_whole_views_registered_as_parameters():
    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.zeros(4, 4).view(16))
            self.b = nn.Parameter(torch.ones(3)[None])
            self.c = nn.Parameter(torch.randn(6).reshape(2, 3))

    record = deferred_record(fusedinit.deferred_init(Views))
    assert record.specs["a"] == Constant(0.0) and record.specs["b"] == Constant(1.0)
    assert isinstance(record.specs["c"], Normal)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.l = nn.Linear(64, 64)
        nn.init.normal_(self.l.weight, std=0.02)
        nn.init.zeros_(self.l.bias)


def test_a_deferred_model_in_a_container_and_a_submodule_alone():
    with torch.device("meta"):
        plain = nn.Linear(4, 4)
    seq = fusedinit.materialize_(nn.Sequential(fusedinit.deferred_init(Net), plain),
                                 device="cpu", seed=SEED)
    expected = fusedinit.normal_(torch.empty(64, 64), 0.0, 0.02, seed=SEED,
                                 stream=param_stream("0.l.weight"))
    assert_bitwise_equal(seq[0].l.weight.detach(), expected)
    assert bool((seq[0].l.bias == 0).all()) and seq[1].weight.abs().max() <= 0.5  # reset_parameters
    alone = fusedinit.materialize_(fusedinit.deferred_init(Net).l, device="cpu", seed=SEED)
    expected = fusedinit.normal_(torch.empty(64, 64), 0.0, 0.02, seed=SEED,
                                 stream=param_stream("weight"))
    assert_bitwise_equal(alone.weight.detach(), expected)
    assert bool((alone.bias == 0).all())


def test_copies_hold_their_sources_values():
    """MoCo / EMA / teacher-student: a copy made in the constructor (`copy_`, `load_state_dict`,
    `copy.deepcopy`, a clone registered as a buffer) holds its source's values, as in torch."""
    import copy

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(32, 32)
            self.k = nn.Linear(32, 32)
            for pq, pk in zip(self.q.parameters(), self.k.parameters()):
                pk.data.copy_(pq.data)
            self.ema = copy.deepcopy(self.q)
            self.register_buffer("w0", self.q.weight.detach().clone())
            self.later = nn.Linear(32, 32)
            self.later.load_state_dict(self.q.state_dict())
            nn.init.ones_(self.later.bias)  # a later write replaces the copy's values

    model = fusedinit.materialize_(fusedinit.deferred_init(Pair), device="cpu", seed=SEED)
    for other in (model.k, model.ema):
        assert_bitwise_equal(other.weight.detach(), model.q.weight.detach())
        assert_bitwise_equal(other.bias.detach(), model.q.bias.detach())
    assert_bitwise_equal(model.w0, model.q.weight.detach())
    assert_bitwise_equal(model.later.weight.detach(), model.q.weight.detach())
    assert bool((model.later.bias == 1).all())


def test_a_buffer_computed_from_a_parameter_is_named():
    class Derived(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(8, 8)
            self.register_buffer("w2", self.l.weight.detach() * 2)

    with pytest.raises(RuntimeError, match="left uninitialized: w2"):
        fusedinit.materialize_(fusedinit.deferred_init(Derived), device="cpu", seed=SEED)


def test_in_place_scalar_arithmetic_on_a_recorded_parameter():
    """timm's ConvNeXt head (`weight.data.mul_(head_init_scale)`) and BEiT / EVA's rescale
    (`weight.data.div_(math.sqrt(2.0 * layer_id))`): on meta no value exists, so the rule is
    the distribution's; a constant is computed as torch computes it."""
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(16, 16)
            nn.init.normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
            self.head.weight.data.mul_(0.5)
            self.head.bias.data.add_(0.1)
            self.proj = nn.Parameter(torch.empty(16, 16))
            nn.init.trunc_normal_(self.proj, std=0.02)
            self.proj.data.div_(math.sqrt(2.0 * 3))

    record = deferred_record(fusedinit.deferred_init(Scaled))
    assert not record.unrecorded, record.unrecorded
    w, b, proj = record.specs["head.weight"], record.specs["head.bias"], record.specs["proj"]
    assert isinstance(w, Normal) and math.isclose(w.std, 0.01)
    assert b == Constant((torch.zeros(1).add_(0.1)).item())
    assert math.isclose(proj.std, 0.02 / math.sqrt(6)) and math.isclose(proj.b, 2 / math.sqrt(6))


class MasterSplit(nn.Module):
    """Megatron-Core's CPU init (`_initialize_affine_weight_cpu`): the full master weight is
    drawn, cast, split along the partition dim, this rank's parts concatenated and copied into
    the local weight."""

    def __init__(self, out_features=2**20, in_features=2**20, ranks=4, rank=1):
        super().__init__()
        per = out_features // ranks
        self.weight = nn.Parameter(torch.empty(per, in_features))
        master = torch.empty(out_features, in_features, dtype=torch.float)
        nn.init.normal_(master, mean=0.0, std=0.02)
        master = master.to(dtype=torch.float32)
        parts = torch.split(master, per // 2, dim=0)  # stride 2
        mine = parts[rank::ranks]
        with torch.no_grad():
            self.weight.data.copy_(torch.cat(mine, dim=0).to_dense())


def test_a_master_weight_split_across_ranks_is_recorded_without_allocating_it():
    """2^40 elements of master weight (4 TiB): recorded, not allocated; the local weight
    follows the master's rule on its own stream."""
    record = deferred_record(fusedinit.deferred_init(MasterSplit))
    spec = record.specs["weight"]
    assert not record.unrecorded and isinstance(spec, Normal) and (spec.mean, spec.std) == (0.0, 0.02)
    model = fusedinit.materialize_(fusedinit.deferred_init(MasterSplit, 64, 32), device="cpu",
                                   seed=SEED)
    expected = fusedinit.normal_(torch.empty(16, 32), 0.0, 0.02, seed=SEED,
                                 stream=param_stream("weight"))
    assert_bitwise_equal(model.weight.detach(), expected)


def test_parts_of_a_ruled_tensor_used_otherwise_are_real():
    """A part of a ruled tensor that is then used by another op is taken from its real value,
    as the whole would be (here a constant: exactly as torch)."""
    class Parts(nn.Module):
        def __init__(self):
            super().__init__()
            base = torch.ones(4, 6)
            top = base.narrow(0, 0, 2)
            top.mul_(torch.arange(6.0))
            self.register_buffer("b", base)
            self.register_buffer("c", torch.cat(torch.split(torch.zeros(4), 2)) + 1)

    torch.manual_seed(0)
    stock = Parts()
    model = fusedinit.deferred_init(Parts)
    for name, t in stock.state_dict().items():
        assert_bitwise_equal(model.state_dict()[name], t, name)


class _TruncMaster(nn.Module):
    """torch.nn.init.trunc_normal_ as a Megatron init_method on a master weight the constructor
    makes (`torch.empty`), then a part of it, a cast or a copy_ into the parameter."""

    def __init__(self, how: str, a: float = -0.02, b: float = 0.02):
        super().__init__()
        master = torch.empty(8, 6)
        nn.init.trunc_normal_(master, std=0.01, a=a, b=b)
        if how == "cast":
            master = master.to(torch.float32)
        if how == "part":
            master = torch.cat(torch.split(master, 2, dim=0)[1:3], dim=0)
        if how == "copy":
            self.w = nn.Parameter(torch.empty(8, 6))
            with torch.no_grad():
                self.w.data.copy_(master)
        else:
            self.w = nn.Parameter(master)


@pytest.mark.parametrize("how", ["whole", "cast", "part", "copy"])
def test_trunc_normal_on_a_master_weight_is_recorded(how):
    """torch >= 2.14's trunc_normal_ returns at once for meta tensors and rounds its bounds
    with `master.new_tensor(a, device="cpu")`: before, the master weight was left unwritten
    (silently) or realized from a draw (named)."""
    model = fusedinit.deferred_init(_TruncMaster, how)
    record = deferred_record(model)
    assert record.unrecorded == {}
    spec = record.specs["w"]
    assert (spec.mean, spec.std, spec.a, spec.b) == (0.0, 0.01, -0.02, 0.02)
    fusedinit.materialize_(model, device="cpu", seed=SEED)
    expected = fusedinit.trunc_normal_(torch.empty(model.w.shape), 0.0, 0.01, -0.02, 0.02,
                                       seed=SEED, stream=param_stream("w"), backend="reference")
    assert_bitwise_equal(model.w.detach(), expected)


def test_a_narrow_trunc_normal_on_a_master_weight_is_named():
    """At most 30% of the mass inside [a, b]: torch's other branch, not recorded - the
    parameter is named, not written with empty memory."""
    model = fusedinit.deferred_init(_TruncMaster, "whole", 0.0, 0.001)
    with pytest.raises(RuntimeError, match="left uninitialized: w"):
        fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert model.w.device.type == "meta"


class _Tagged(nn.Module):
    """Attributes a library sets on its parameters (Megatron: tensor_model_parallel,
    partition_dim, allreduce), after registration and before."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.empty(4, 3))
        self.w.tensor_model_parallel, self.w.partition_dim = True, 0
        nn.init.normal_(self.w, std=0.02)
        tagged = nn.Parameter(torch.zeros(3))
        tagged.allreduce = False
        self.b = tagged
        self.tied = nn.Linear(3, 3)
        self.tied.weight.shared = True
        self.other = nn.Linear(3, 3)
        self.other.weight = self.tied.weight


def test_materialize_keeps_the_attributes_set_on_parameters():
    """to_empty makes new Parameter objects for meta ones: their attributes come along (before,
    Megatron's DDP would have lost tensor_model_parallel / allreduce)."""
    model = fusedinit.deferred_init(_Tagged)
    fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert (model.w.tensor_model_parallel, model.w.partition_dim) == (True, 0)
    assert model.b.allreduce is False
    assert model.other.weight is model.tied.weight and model.tied.weight.shared is True
    assert model.w.device.type == "cpu" and model.w.requires_grad


def test_a_failed_materialize_keeps_attributes_under_swap_conversion():
    """With torch.__future__.set_swap_module_params_on_conversion(True), to_empty swaps the
    parameters' contents (and __dict__): a materialize_ that fails puts the attributes back, so
    a later one still has them."""
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model = fusedinit.deferred_init(_Tagged)
        model.register_parameter("bare", nn.Parameter(torch.empty(2, device="meta")))
        with pytest.raises(RuntimeError, match="left uninitialized: bare"):
            fusedinit.materialize_(model, device="cpu", seed=SEED)
        assert (model.w.tensor_model_parallel, model.w.partition_dim) == (True, 0)
        assert model.w.device.type == "meta"
        fusedinit.materialize_(model, device="cpu", seed=SEED, init=lambda m: nn.init.zeros_(m.bare))
        assert model.w.tensor_model_parallel is True and model.b.allreduce is False
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)
