"""Plain PyTorch modules through `fusedinit.deferred_init` + `fusedinit.materialize_`: each
parameter gets exactly the contract's values for the rule torch's own init code gives it
(xavier / kaiming-uniform bounds from the fans, constants), stock-built modules obey the same
rules, buffers are right, and whatever nothing initializes is an error naming it."""
import copy
import dataclasses
import math
import threading

import pytest
import torch
from torch import nn

import fusedinit
from fusedinit import Constant, TruncNormal, Uniform, param_stream

SEED = 20261130


def contract(shape, dtype, spec, name, seed=SEED):
    """The contract's values of `spec` for the parameter called `name`."""
    if not isinstance(spec, Constant):
        spec = dataclasses.replace(spec, stream=param_stream(name))
    return fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=seed)[0]


def bits(t):
    return t.detach().contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_contract(t, spec, name, seed=SEED):
    expected = contract(tuple(t.shape), t.dtype, spec, name, seed)
    assert torch.equal(bits(t), bits(expected)), f"{name}: not the contract's values of {spec}"


def fan_in_out(t):
    return nn.init._calculate_fan_in_and_fan_out(t)


def xavier(t):
    fan_in, fan_out = fan_in_out(t)
    b = math.sqrt(6.0 / (fan_in + fan_out))
    return Uniform(-b, b)


def kaiming_a_sqrt5(t):
    """nn.Linear / nn.Conv weights: kaiming_uniform_(a=sqrt(5)) is U(+-1/sqrt(fan_in))."""
    gain = math.sqrt(2.0 / (1 + 5))
    b = gain * math.sqrt(3.0 / fan_in_out(t)[0])
    return Uniform(-b, b)


def fan_in_bias(weight):
    b = 1 / math.sqrt(fan_in_out(weight)[0])
    return Uniform(-b, b)


def transformer_rules(model: nn.Transformer):
    """What nn.Transformer's constructor does: every Linear/MHA reset, then xavier_uniform_ on
    every parameter with more than one dim; MultiheadAttention zeroes its in_proj and out_proj
    biases; LayerNorms one / zero."""
    rules = {}
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        module = modules[owner]
        if p.dim() > 1:
            rules[name] = xavier(p)
        elif isinstance(module, nn.LayerNorm):
            rules[name] = Constant(1.0 if leaf == "weight" else 0.0)
        elif isinstance(module, nn.MultiheadAttention) or owner.endswith("self_attn.out_proj") \
                or owner.endswith("multihead_attn.out_proj"):
            rules[name] = Constant(0.0)
        else:
            assert isinstance(module, nn.Linear) and leaf == "bias", name
            rules[name] = fan_in_bias(module.weight)
    return rules


def small_transformer(**kwargs):
    return nn.Transformer(d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=1,
                          dim_feedforward=48, **kwargs)


def conv_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, bias=False), nn.BatchNorm2d(6), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 10))


def conv_rules(model):
    rules = {}
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        module = modules[owner]
        if isinstance(module, nn.BatchNorm2d):
            rules[name] = Constant(1.0 if leaf == "weight" else 0.0)
        elif leaf == "weight":
            rules[name] = kaiming_a_sqrt5(p)
        else:
            rules[name] = fan_in_bias(module.weight)
    return rules


def check_stock_obeys(model, rules):
    """The expected rules are torch's: a normally built module lies within every bound (and
    fills most of the range) and equals every constant."""
    for name, p in model.named_parameters():
        spec = rules[name]
        if isinstance(spec, Constant):
            assert torch.all(p == spec.value), name
        else:
            assert p.min() >= spec.a and p.max() <= spec.b, name
            if p.numel() >= 64:
                assert p.max() - p.min() > 0.8 * (spec.b - spec.a), name


class CountFusedOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts fusedinit op calls and torch's own random draws."""

    def __init__(self):
        super().__init__()
        self.fused = 0
        self.torch_random = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fusedinit":
            self.fused += 1
        if func.__name__.split(".")[0] in ("normal_", "uniform_", "bernoulli_", "random_",
                                           "exponential_", "erfinv_"):
            self.torch_random += 1
        return func(*args, **(kwargs or {}))


def test_transformer_deferred_materialize_has_torch_rules_on_contract_values():
    torch.manual_seed(0)
    stock = small_transformer()
    rules = transformer_rules(stock)
    check_stock_obeys(stock, rules)

    model = fusedinit.deferred_init(small_transformer)
    assert all(p.device.type == "meta" for p in model.parameters())
    with CountFusedOps() as count:
        fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert count.fused == 1 and count.torch_random == 0
    assert set(dict(model.named_parameters())) == set(rules)
    for name, p in model.named_parameters():
        assert p.device.type == "cpu" and p.requires_grad
        assert_contract(p, rules[name], name)
    # The module works.
    src, tgt = torch.randn(5, 2, 32), torch.randn(4, 2, 32)
    assert model(src, tgt).shape == (4, 2, 32)


def test_conv_batchnorm_deferred_materialize_rules_and_buffers():
    torch.manual_seed(1)
    stock = conv_net()
    rules = conv_rules(stock)
    check_stock_obeys(stock, rules)

    model = fusedinit.deferred_init(conv_net)
    fusedinit.materialize_(model, device="cpu", seed=SEED)
    for name, p in model.named_parameters():
        assert_contract(p, rules[name], name)
    stock_buffers = dict(stock.named_buffers())
    buffers = dict(model.named_buffers())
    assert set(buffers) == set(stock_buffers)
    for name, b in buffers.items():
        assert b.dtype == stock_buffers[name].dtype and torch.equal(b, stock_buffers[name]), name
    model(torch.randn(2, 3, 8, 8))


def test_reset_parameters_path_equals_the_recorded_constructor():
    """A module built normally (or on meta) is initialized by each submodule's public
    reset_parameters(): same rules, same names, so the same values as deferred_init's record."""
    deferred = fusedinit.deferred_init(conv_net)
    fusedinit.materialize_(deferred, device="cpu", seed=SEED)
    with torch.device("meta"):
        built = conv_net()
    with CountFusedOps() as count:
        fusedinit.materialize_(built, device="cpu", seed=SEED)
    assert count.fused == 1
    for (n1, a), (n2, b) in zip(deferred.state_dict().items(), built.state_dict().items()):
        assert n1 == n2 and torch.equal(bits(a) if a.is_floating_point() else a,
                                        bits(b) if b.is_floating_point() else b), n1


def test_private_reset_parameters_is_an_error_naming_the_parameter():
    """nn.MultiheadAttention has no public reset_parameters(): built normally, its in_proj is
    left to nobody - an error naming it, not uninitialized memory."""
    model = small_transformer()
    with pytest.raises(RuntimeError, match=r"encoder\.layers\.0\.self_attn\.in_proj_weight"):
        fusedinit.materialize_(model, device="cpu", seed=SEED)
    # With init= the same module is fine.
    fusedinit.materialize_(model, device="cpu", seed=SEED,
                           init=lambda m: [nn.init.normal_(p, std=0.02) for p in m.parameters()])
    from fusedinit import Normal
    for name, p in model.named_parameters():
        expected = fusedinit.init_many_(
            [(torch.empty(p.shape), Normal(0.0, 0.02, stream=param_stream(name)))], seed=SEED)[0]
        assert torch.equal(bits(p), bits(expected)), name


def test_init_runs_after_the_recorded_constructor_init():
    """materialize_(init=) on a deferred module: the constructor's rules, then init's writes
    replace the ones they cover - as if both had run for real."""
    model = fusedinit.deferred_init(conv_net)
    rules = conv_rules(model)
    fusedinit.materialize_(model, device="cpu", seed=SEED,
                           init=lambda m: nn.init.zeros_(m[6].weight))
    for name, p in model.named_parameters():
        spec = Constant(0.0) if name == "6.weight" else rules[name]
        assert_contract(p, spec, name)


class Unrecordable(nn.Module):
    """A constructor that maps drawn values through a non-affine op: not an init write, not
    recordable on meta (scalar arithmetic is: test_deferred_constructor_values)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 16)
        with torch.no_grad():
            self.proj.weight.abs_()


def test_unrecordable_constructor_init_is_an_error_unless_overwritten():
    model = fusedinit.deferred_init(Unrecordable)
    with pytest.raises(RuntimeError, match=r"proj\.weight \(its constructor ran ops"):
        fusedinit.materialize_(copy.deepcopy(model), device="cpu", seed=SEED)
    fusedinit.materialize_(model, device="cpu", seed=SEED,
                           init=lambda m: nn.init.uniform_(m.proj.weight, -0.5, 0.5))
    assert_contract(model.proj.weight, Uniform(-0.5, 0.5), "proj.weight")
    assert_contract(model.proj.bias, fan_in_bias(model.proj.weight), "proj.bias")


class WithTable(nn.Module):
    """A buffer computed by the constructor (no init op): kept as computed."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        position = torch.arange(16, dtype=torch.float32)[:, None]
        self.register_buffer("table", torch.sin(position / 10.0 ** (torch.arange(8) / 8)))


def test_constructor_computed_buffers_are_kept():
    stock = WithTable()
    model = fusedinit.deferred_init(WithTable)
    fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert torch.equal(model.table, stock.table)


def test_same_seed_same_values_generator_reproducible():
    a = fusedinit.materialize_(fusedinit.deferred_init(conv_net), device="cpu", seed=7)
    b = fusedinit.materialize_(fusedinit.deferred_init(conv_net), device="cpu", seed=7)
    c = fusedinit.materialize_(fusedinit.deferred_init(conv_net), device="cpu",
                               generator=torch.Generator().manual_seed(3))
    d = fusedinit.materialize_(fusedinit.deferred_init(conv_net), device="cpu",
                               generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0].weight, b[0].weight) and torch.equal(c[0].weight, d[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_registration_hooks_act_only_in_the_building_thread():
    """deferred_init's hooks are torch's process-wide ones: a module built meanwhile in another
    thread must stay real and untouched."""
    started, release = threading.Event(), threading.Event()
    built = {}

    def slow():
        started.set()
        release.wait(10)
        return nn.Linear(4, 4)

    def other():
        started.wait(10)
        built["other"] = nn.Linear(4, 4)
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    model = fusedinit.deferred_init(slow)
    thread.join()
    assert model.weight.device.type == "meta"
    assert built["other"].weight.device.type == "cpu"


def test_bad_arguments():
    with pytest.raises(TypeError, match="fn must be callable"):
        fusedinit.deferred_init(3)
    with pytest.raises(TypeError, match="fn must return an nn.Module"):
        fusedinit.deferred_init(lambda: torch.zeros(2))
    model = fusedinit.deferred_init(conv_net)
    with pytest.raises(TypeError, match="module must be an nn.Module"):
        fusedinit.materialize_(torch.zeros(2), device="cpu")
    with pytest.raises(ValueError, match="device"):
        fusedinit.materialize_(model, device="not-a-device")
    with pytest.raises(ValueError, match="device"):
        fusedinit.materialize_(model, device="meta")
    with pytest.raises(TypeError, match="init must be a callable"):
        fusedinit.materialize_(model, device="cpu", init=3)
    with pytest.raises(ValueError, match="seed"):
        fusedinit.materialize_(model, device="cpu", seed=-1)
    # Nothing was allocated by the refused calls.
    assert all(p.device.type == "meta" for p in model.parameters())


class TruncNormalConstructor(nn.Module):
    """A constructor calling torch's own nn.init.trunc_normal_, which returns at once for meta
    tensors: deferred_init must still record it."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(64, 32)
        nn.init.trunc_normal_(self.proj.weight, std=0.02, a=-0.04, b=0.04)
        self.table = nn.Parameter(torch.empty(10, 8))
        nn.init.trunc_normal_(self.table, mean=1.0, std=0.5)


def test_torch_trunc_normal_in_a_constructor_is_recorded():
    model = fusedinit.deferred_init(TruncNormalConstructor)
    assert model.proj.weight.is_meta  # only the constructor saw its tensors as live
    fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert_contract(model.proj.weight, TruncNormal(0.0, 0.02, -0.04, 0.04), "proj.weight")
    assert_contract(model.table, TruncNormal(1.0, 0.5, -2.0, 2.0), "table")
    assert_contract(model.proj.bias, fan_in_bias(model.proj.weight), "proj.bias")
    # The same values as the stock-built module's trunc_normal_ calls run under fuse.
    stock = TruncNormalConstructor()
    with fusedinit.fuse(stock, seed=SEED):
        nn.init.trunc_normal_(stock.proj.weight, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(stock.table, mean=1.0, std=0.5)
    for name in ("proj.weight", "table"):
        assert torch.equal(bits(model.get_parameter(name)), bits(stock.get_parameter(name))), name


@pytest.mark.parametrize("swap", [False, True])
def test_failed_materialize_leaves_the_module_as_it_was(swap):
    """A materialize_ that raises (a parameter nothing initializes, or init() itself failing)
    hands back no half-written module: every parameter and buffer is what it was before, and a
    second call can succeed."""
    previous = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(swap)
    try:
        model = fusedinit.deferred_init(Unrecordable)
        weight, bias = model.proj.weight, model.proj.bias
        with pytest.raises(RuntimeError, match=r"proj\.weight"):
            fusedinit.materialize_(model, device="cpu", seed=SEED)
        assert model.proj.weight is weight and weight.is_meta and bias.is_meta

        def broken(m):
            nn.init.zeros_(m.proj.weight)
            raise ValueError("init failed")
        with pytest.raises(ValueError, match="init failed"):
            fusedinit.materialize_(model, device="cpu", seed=SEED, init=broken)
        assert model.proj.weight.is_meta and model.proj.bias.is_meta

        # A module with real weights keeps them when materialize_ fails on it.
        real = nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(8, 2))
        before = {n: t.detach().clone() for n, t in real.state_dict().items()}
        with pytest.raises(RuntimeError, match="in_proj_weight"):
            fusedinit.materialize_(real, device="cpu", seed=SEED)
        after = real.state_dict()
        assert before.keys() == after.keys()
        for n in before:
            assert torch.equal(before[n], after[n]), n

        fusedinit.materialize_(model, device="cpu", seed=SEED,
                               init=lambda m: nn.init.uniform_(m.proj.weight, -0.5, 0.5))
        assert_contract(model.proj.weight, Uniform(-0.5, 0.5), "proj.weight")
    finally:
        torch.__future__.set_swap_module_params_on_conversion(previous)


class NarrowTruncNormal(nn.Module):
    """torch's trunc_normal_ with <= 30% of the mass inside [a, b] tests drawn values, which a
    meta tensor cannot answer: deferred_init must not fail, and the parameter is named."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.empty(8, 8))
        nn.init.trunc_normal_(self.w, mean=0.0, std=1.0, a=2.0, b=3.0)
        self.ok = nn.Parameter(torch.empty(4))
        nn.init.trunc_normal_(self.ok, std=0.5)


def test_narrow_trunc_normal_in_a_constructor_is_named_not_guessed():
    model = fusedinit.deferred_init(NarrowTruncNormal)
    with pytest.raises(RuntimeError, match=r"left uninitialized: w"):
        fusedinit.materialize_(model, device="cpu", seed=SEED)
    fusedinit.materialize_(model, device="cpu", seed=SEED,
                           init=lambda m: nn.init.trunc_normal_(m.w, std=1.0, a=2.0, b=3.0))
    assert float(model.w.min()) >= 2.0 and float(model.w.max()) <= 3.0
    assert_contract(model.ok, TruncNormal(0.0, 0.5, -2.0, 2.0), "ok")


class TiedHead(nn.Module):
    """A language-model-like module whose output layer shares the embedding's weight."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 8)
        self.head = nn.Linear(8, 32, bias=False)
        self.head.weight = self.emb.weight


def test_tied_weights_stay_one_tensor():
    """A parameter held by two modules is allocated once and stays shared (to_empty alone gives
    each slot its own tensor), with the values of its first name."""
    model = fusedinit.materialize_(fusedinit.deferred_init(TiedHead), device="cpu", seed=SEED)
    assert model.head.weight is model.emb.weight
    assert [name for name, _ in model.named_parameters()] == ["emb.weight"]
    assert_contract(model.emb.weight, fusedinit.Normal(0.0, 1.0), "emb.weight")
