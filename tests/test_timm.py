"""timm as a client: its ViT's own init code (timm's copy of trunc_normal_ - uniform_, erfinv_,
mul_, add_, clamp_ - folded by the engine; normal_ for the class token; reset_parameters() of
the patch-embedding conv and the norms) under `fusedinit.fuse`, and the same model through
`deferred_init` + `materialize_` (its constructor runs init_weights): the rules timm's code
gives each parameter, on the contract's values, in one op call."""
import dataclasses
import math

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

import fusedinit  # noqa: E402
from fusedinit import Constant, Normal, TruncNormal, Uniform, param_stream  # noqa: E402

SEED = 99
ARCH = "vit_tiny_patch16_224"


def bits(t):
    return t.detach().contiguous().view(torch.int32)


def contract(t, spec, name):
    if not isinstance(spec, Constant):
        spec = dataclasses.replace(spec, stream=param_stream(name))
    return fusedinit.init_many_([(torch.empty(t.shape, dtype=t.dtype), spec)], seed=SEED)[0]


def vit_rules(model):
    """timm's init_weights_vit_timm: Linear weights trunc_normal_(std=.02) (timm's bounds are
    absolute: -2, 2), biases zero; pos_embed trunc_normal_(std=.02); cls_token normal_(1e-6);
    everything else its module's reset_parameters() (Conv2d: kaiming_uniform_(a=sqrt(5)) and a
    fan-in bias; LayerNorm: one / zero)."""
    rules = {}
    modules = dict(model.named_modules())
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        module = modules.get(owner)
        if name == "pos_embed":
            rules[name] = TruncNormal(0.0, 0.02, -2.0, 2.0)
        elif name == "cls_token":
            rules[name] = Normal(0.0, 1e-6)
        elif isinstance(module, nn.Linear):
            rules[name] = TruncNormal(0.0, 0.02, -2.0, 2.0) if leaf == "weight" else Constant(0.0)
        elif isinstance(module, nn.LayerNorm):
            rules[name] = Constant(1.0 if leaf == "weight" else 0.0)
        elif isinstance(module, nn.Conv2d):
            fan_in = nn.init._calculate_fan_in_and_fan_out(module.weight)[0]
            b = 1 / math.sqrt(fan_in)
            rules[name] = Uniform(-b, b)
        else:
            raise AssertionError(f"no rule known for {name} ({type(module).__name__})")
    return rules


class CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.fused = self.torch_random = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.fused += func.namespace == "fusedinit"
        self.torch_random += func.__name__.split(".")[0] in ("normal_", "uniform_", "erfinv_")
        return func(*args, **(kwargs or {}))


def test_stock_vit_obeys_the_rules():
    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False)
    for name, spec in vit_rules(model).items():
        p = dict(model.named_parameters())[name].detach()
        if isinstance(spec, Constant):
            assert torch.all(p == spec.value), name
        elif isinstance(spec, Uniform):
            assert p.min() >= spec.a and p.max() <= spec.b, name
        elif p.numel() > 1000:
            assert abs(float(p.std()) - spec.std) < 0.1 * spec.std, name


def test_fuse_vit_init_weights():
    model = timm.create_model(ARCH, pretrained=False)
    rules = vit_rules(model)
    with CountOps() as count, fusedinit.fuse(model, seed=SEED):
        model.init_weights()
    assert count.fused == 1 and count.torch_random == 0
    for name, p in model.named_parameters():
        assert torch.equal(bits(p), bits(contract(p, rules[name], name))), f"{name}: {rules[name]}"
    # Bounds exact, spread right.
    w = model.blocks[0].mlp.fc1.weight.detach().double()
    assert abs(float(w.std()) - 0.02) < 6 * 0.02 * math.sqrt(2 / w.numel())


def test_deferred_vit_equals_fuse():
    fused = timm.create_model(ARCH, pretrained=False)
    with fusedinit.fuse(fused, seed=SEED):
        fused.init_weights()
    model = fusedinit.deferred_init(timm.create_model, ARCH, pretrained=False)
    assert all(p.device.type == "meta" for p in model.parameters())
    with CountOps() as count:
        fusedinit.materialize_(model, device="cpu", seed=SEED)
    assert count.fused == 1 and count.torch_random == 0
    for (n1, a), (n2, b) in zip(fused.state_dict().items(), model.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b), n1
    model.eval()
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
