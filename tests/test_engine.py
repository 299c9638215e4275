"""fusedinit.fuse: any init code inside, every write to the module queued and written in one op
call per device with the contract's values; chains folded only where exact, run as written on
the contract's values otherwise; nothing written when the block raises."""
import functools
import math

import pytest
import torch
from torch import nn

import fusedinit
from conftest import assert_bitwise_equal
from fusedinit import param_stream

SEED = 1234
# Bound before anything could patch torch.nn.init: the engine must see through it.
EARLY_TRUNC = functools.partial(nn.init.trunc_normal_, std=0.02)




def contract(fill, shape, name, *args, dtype=torch.float32, **kwargs):
    """What fusedinit writes for `name` with SEED."""
    return fill(torch.empty(shape, dtype=dtype), *args, seed=SEED, stream=param_stream(name),
                **kwargs)


def erfinv_trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    """The inverse-CDF trunc_normal_ of torch <= 2.12 (and timm's copy), op for op."""
    def norm_cdf(x):
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        lo, hi = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
        tensor.uniform_(2 * lo - 1, 2 * hi - 1)
        tensor.erfinv_()
        tensor.mul_(std * math.sqrt(2.0))
        tensor.add_(mean)
        tensor.clamp_(min=a, max=b)
    return tensor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(64, 16, padding_idx=3)
        self.q = nn.Linear(16, 16)
        self.k = nn.Linear(16, 16)
        self.v = nn.Linear(16, 24)
        self.o = nn.Linear(24, 16)
        self.rot = nn.Linear(16, 16, bias=False)
        self.norm = nn.LayerNorm(16)
        self.bn = nn.BatchNorm1d(16)

    @torch.no_grad()
    def init(self):
        nn.init.trunc_normal_(self.q.weight, std=0.02)          # torch's rejection sampler
        EARLY_TRUNC(self.k.weight)                              # a partial bound at import
        erfinv_trunc_normal_(self.v.weight, std=0.02, a=-0.04, b=0.04)
        self.o.weight.data.normal_().mul_(0.05).add_(0.01)      # normal_ scaled and shifted
        nn.init.kaiming_uniform_(self.q.bias.view(1, -1), a=math.sqrt(5))
        nn.init.zeros_(self.k.bias)
        nn.init.orthogonal_(self.rot.weight)                    # runs as written on a temporary
        nn.init.normal_(self.embed.weight, std=0.02)
        self.embed.weight[self.embed.padding_idx].zero_()
        nn.init.ones_(self.norm.weight)
        self.bn.reset_running_stats()


def test_fuse_writes_the_contracts_values_in_one_op_call(op_calls):
    net = Net()
    torch.manual_seed(0)
    with fusedinit.fuse(net, seed=SEED):
        net.init()
    # orthogonal_ reads its own temporary draw: only that is written then (one call of its
    # own); the module's writes stay queued for one op call.
    assert op_calls == [1, 10], "one op call for every queued write"
    tn = fusedinit.trunc_normal_
    assert_bitwise_equal(net.q.weight.detach(), contract(tn, (16, 16), "q.weight", 0.0, 0.02))
    assert_bitwise_equal(net.k.weight.detach(), contract(tn, (16, 16), "k.weight", 0.0, 0.02))
    assert_bitwise_equal(net.v.weight.detach(),
                         contract(tn, (24, 16), "v.weight", 0.0, 0.02, -0.04, 0.04))
    assert_bitwise_equal(net.o.weight.detach(),
                         contract(fusedinit.normal_, (16, 24), "o.weight", 0.01, 0.05))
    bound = 1 / math.sqrt(16)  # kaiming_uniform_(a=sqrt(5)) on a (1, 16) view: U(-1/4, 1/4)
    assert_bitwise_equal(net.q.bias.detach(), contract(fusedinit.uniform_, (16,), "q.bias",
                                                       -bound, bound))
    emb = contract(fusedinit.normal_, (64, 16), "embed.weight", 0.0, 0.02, padding_idx=3)
    assert_bitwise_equal(net.embed.weight.detach(), emb)
    assert (net.k.bias == 0).all() and (net.norm.weight == 1).all()
    assert int(net.bn.num_batches_tracked) == 0 and (net.bn.running_var == 1).all()
    # torch's orthogonal_ on the contract's normal draw of the recording's first temporary.
    drawn = contract(fusedinit.normal_, (16, 16), "fusedinit.temporary.0")
    q, r = torch.linalg.qr(drawn)
    expected = q * torch.diag(r, 0).sign()
    assert_bitwise_equal(net.rot.weight.detach(), expected, "orthogonal_ runs as torch runs it")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_torch_trunc_normal_is_one_trunc_normal(dtype, op_calls):
    lin = nn.Linear(32, 48).to(dtype)
    with fusedinit.fuse(lin, seed=SEED):
        nn.init.trunc_normal_(lin.weight, mean=0.01, std=0.5)
    assert op_calls == [1]
    expected = contract(fusedinit.trunc_normal_, (48, 32), "weight", 0.01, 0.5, dtype=dtype)
    assert_bitwise_equal(lin.weight.detach(), expected)


def test_timm_trunc_normal_variants():
    timm_init = pytest.importorskip("timm.layers.weight_init")
    lin = nn.Linear(32, 48)
    lin2 = nn.Linear(32, 48)
    seq = nn.Sequential(lin, lin2)
    with fusedinit.fuse(seq, seed=SEED):
        timm_init.trunc_normal_(lin.weight, std=0.02)
        timm_init.trunc_normal_tf_(lin2.weight, std=0.5, a=-2.0, b=2.0)
    assert_bitwise_equal(lin.weight.detach(),
                         contract(fusedinit.trunc_normal_, (48, 32), "0.weight", 0.0, 0.02))
    # trunc_normal_tf_: TruncNormal(0, 1, a, b) then * std: bounds scaled with it.
    assert_bitwise_equal(lin2.weight.detach(), contract(fusedinit.trunc_normal_, (48, 32),
                                                        "1.weight", 0.0, 0.5, -1.0, 1.0))


def test_unfinished_chains_run_on_the_contracts_values(op_calls):
    """uniform_ then erfinv_ only, a normal_ scaled by a negative number, a normal_ then read:
    the queued values are written and the rest runs exactly as torch runs it."""
    a, b, c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
    seq = nn.Sequential(a, b, c)
    with fusedinit.fuse(seq, seed=SEED):
        a.weight.data.uniform_(-0.5, 0.5).erfinv_()
        b.weight.data.normal_().mul_(-0.25)
        c.weight.data.normal_(0.0, 2.0)
        negative = c.weight < 0                    # a comparison that is not a trunc_normal_
        listed = negative.tolist()                 # read without a dispatched op
        c.bias.data.copy_(negative[0].float())
    uni = contract(fusedinit.uniform_, (8, 8), "0.weight", -0.5, 0.5)
    assert_bitwise_equal(a.weight.detach(), torch.erfinv(uni))
    assert_bitwise_equal(b.weight.detach(), contract(fusedinit.normal_, (8, 8), "1.weight") * -0.25)
    cw = contract(fusedinit.normal_, (8, 8), "2.weight", 0.0, 2.0)
    assert_bitwise_equal(c.weight.detach(), cw)
    assert torch.equal(negative, cw < 0) and torch.equal(c.bias.detach(), (cw[0] < 0).float())
    assert listed == (cw < 0).tolist()


def test_rejection_path_of_narrow_trunc_normal_runs_on_contract_uniforms():
    """torch's trunc_normal_ with little mass inside [a, b] samples uniform_(a, b) and rejects:
    the first draw is the contract's, the rest is torch's own code."""
    lin = nn.Linear(64, 64)
    with fusedinit.fuse(lin, seed=SEED):
        nn.init.trunc_normal_(lin.weight, mean=0.0, std=1.0, a=-0.1, b=0.1)
    w = lin.weight.detach()
    assert float(w.min()) >= -0.1 and float(w.max()) <= 0.1


def test_nothing_is_written_when_the_block_raises():
    lin = nn.Linear(8, 8)
    before = {k: v.clone() for k, v in lin.state_dict().items()}
    with pytest.raises(KeyError):
        with fusedinit.fuse(lin, seed=SEED):
            nn.init.normal_(lin.weight)
            nn.init.zeros_(lin.bias)
            raise KeyError("init failed")
    for k, v in lin.state_dict().items():
        assert_bitwise_equal(v, before[k], k)


def test_fuse_checks_its_arguments():
    with pytest.raises(TypeError, match="module"):
        with fusedinit.fuse(torch.empty(3)):
            pass
    with pytest.raises(TypeError, match="generator"):
        with fusedinit.fuse(nn.Linear(2, 2), generator=3):
            pass


def test_seed_from_generator_is_drawn_once():
    gen = torch.Generator().manual_seed(5)
    lin = nn.Linear(8, 8)
    with fusedinit.fuse(lin, generator=gen):
        nn.init.normal_(lin.weight)
        nn.init.normal_(lin.bias)
    seed = fusedinit.ops.seed.resolve_seed(None, torch.Generator().manual_seed(5))
    expected = fusedinit.normal_(torch.empty(8), seed=seed, stream=param_stream("bias"))
    assert_bitwise_equal(lin.bias.detach(), expected)


def test_init_module_validates_everything_before_writing():
    """A bad rule found after a BatchNorm leaves its integer buffer untouched."""
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4))
    model[0].num_batches_tracked.fill_(5)
    model[0].running_mean.fill_(3.0)
    with pytest.raises(ValueError, match="std"):
        fusedinit.init_module_(model, std=-1.0, seed=1)
    assert int(model[0].num_batches_tracked) == 5
    assert (model[0].running_mean == 3.0).all()


def test_dtensor_parameters_one_rank(tmp_path, op_calls):
    """DTensor parameters are queued by their local shard; torch's trunc_normal_ folds on them
    too (its masks are sharded like the tensor); each rank writes its shards in one op call."""
    dist = pytest.importorskip("torch.distributed")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group yet")
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0,
                            world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        lin = nn.Linear(16, 32)
        for name in ("weight", "bias"):
            sharded = distribute_tensor(getattr(lin, name).detach(), mesh, [Shard(0)])
            setattr(lin, name, nn.Parameter(sharded))
        with fusedinit.fuse(lin, seed=SEED):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            lin.bias.data.normal_().mul_(0.5)
        assert op_calls == [2]
        weight, bias = lin.weight.full_tensor(), lin.bias.full_tensor()
    finally:
        dist.destroy_process_group()
    assert_bitwise_equal(weight, contract(fusedinit.trunc_normal_, (32, 16), "weight", 0.0, 0.02))
    assert_bitwise_equal(bias, contract(fusedinit.normal_, (32,), "bias", 0.0, 0.5))


def test_other_torch_init_functions(op_calls):
    """xavier / kaiming normal are one Normal each; sparse_, eye_ and dirac_ write the queue
    first and run as written on the contract's values."""
    m = nn.Sequential(*[nn.Linear(8, 8, bias=False) for _ in range(4)],
                      nn.Conv1d(4, 4, 3, bias=False))
    with fusedinit.fuse(m, seed=SEED):
        nn.init.xavier_normal_(m[0].weight)
        nn.init.kaiming_normal_(m[1].weight)
        nn.init.sparse_(m[2].weight, 0.5, std=0.1)
        nn.init.eye_(m[3].weight)
        nn.init.dirac_(m[4].weight)
    assert sum(op_calls) == 4  # the eye_ write is torch's own
    assert_bitwise_equal(m[0].weight.detach(), contract(fusedinit.normal_, (8, 8), "0.weight",
                                                        0.0, math.sqrt(2 / 16)))
    assert_bitwise_equal(m[1].weight.detach(), contract(fusedinit.normal_, (8, 8), "1.weight",
                                                        0.0, math.sqrt(2 / 8)))
    sparse, drawn = m[2].weight.detach(), contract(fusedinit.normal_, (8, 8), "2.weight", 0.0, 0.1)
    assert ((sparse == 0).sum(0) == 4).all() and torch.equal(sparse[sparse != 0], drawn[sparse != 0])
    assert torch.equal(m[3].weight, torch.eye(8))
    assert torch.equal(m[4].weight, nn.init.dirac_(torch.empty(4, 4, 3)))


def test_rejection_sampler_masks_cost_no_memory():
    """torch >= 2.14's trunc_normal_ tests `(t < lo) | (t > hi)` and `.any()` on the drawn
    tensor; under fuse the answer is known (no value is outside), so neither the comparisons nor
    the `|` may allocate or read a full-size mask - they reach no kernel at all."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ran(TorchDispatchMode):  # entered first: sees only what the engine really runs
        def __init__(self):
            super().__init__()
            self.big = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.dtype == torch.bool and out.numel() > 1 \
                    and out.stride() != (0,) * out.dim():
                self.big.append(func)
            return out

    lin = nn.Linear(256, 512, bias=False)
    ran = Ran()
    with ran, fusedinit.fuse(lin, seed=3):
        nn.init.trunc_normal_(lin.weight, std=0.02, a=-0.04, b=0.04)
    assert ran.big == [], ran.big
    expected = fusedinit.trunc_normal_(torch.empty(512, 256), 0.0, 0.02, -0.04, 0.04, seed=3,
                                       stream=fusedinit.param_stream("weight"))
    assert torch.equal(lin.weight.detach().view(torch.int32), expected.view(torch.int32))


def reference_contract(fill, shape, name, *args, dtype=torch.float32, **kwargs):
    """`contract` from the pure-PyTorch reference."""
    return contract(fill, shape, name, *args, dtype=dtype, backend="reference", **kwargs)


# Bounds not symmetric about the mean: a fold that took b as -a (or a as -b) would write
# another distribution. Each keeps more than 30% of the mass inside [a, b], so torch >= 2.14's
# trunc_normal_ takes its rejection branch (normal_, then tests against the bounds).
LOPSIDED = [(0.0, 0.02, -0.03, 0.05), (0.0, 0.02, -0.05, 0.03), (0.01, 0.02, -0.02, 0.07),
            (0.0, 0.02, -0.03125, 0.0625)]
# float64 tensors only with float32 bounds: for others the fold bounds the contract's values by
# a and b rounded to the nearest float32 (engine._value_range), which may lie outside [a, b]
# (the contract rounds them inward), and leaves torch's loop to run on the normal draw.
LOPSIDED_CASES = [(dtype, *case) for case in LOPSIDED for dtype in (torch.float32, torch.bfloat16)]
LOPSIDED_CASES.append((torch.float64, *LOPSIDED[-1]))


@pytest.mark.parametrize("dtype, mean, std, a, b", LOPSIDED_CASES,
                         ids=lambda v: str(v)[6:] if isinstance(v, torch.dtype) else None)
def test_torch_trunc_normal_with_lopsided_bounds(dtype, mean, std, a, b, op_calls):
    phi = [math.erf((x - mean) / (std * math.sqrt(2))) / 2 for x in (a, b)]
    inside = phi[1] - phi[0]
    assert inside > 0.3, "the case must take torch's rejection branch"
    lin = nn.Linear(32, 48, bias=False).to(dtype)
    with fusedinit.fuse(lin, seed=SEED):
        nn.init.trunc_normal_(lin.weight, mean=mean, std=std, a=a, b=b)
    assert op_calls == [1], "folded into one TruncNormal, not run as torch's loop"
    expected = reference_contract(fusedinit.trunc_normal_, (48, 32), "weight", mean, std, a, b,
                                  dtype=dtype)
    assert_bitwise_equal(lin.weight.detach(), expected)


@pytest.mark.parametrize("mean, std, a, b", LOPSIDED)
def test_erfinv_trunc_normal_with_lopsided_bounds(mean, std, a, b, op_calls):
    """The inverse-CDF trunc_normal_ (torch <= 2.12, timm) folds to the same TruncNormal."""
    lin = nn.Linear(32, 48, bias=False)
    with fusedinit.fuse(lin, seed=SEED):
        erfinv_trunc_normal_(lin.weight, mean=mean, std=std, a=a, b=b)
    assert op_calls == [1]
    expected = reference_contract(fusedinit.trunc_normal_, (48, 32), "weight", mean, std, a, b)
    assert_bitwise_equal(lin.weight.detach(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_direct_normal_with_a_mean(dtype, op_calls):
    """normal_(mean != 0) on a parameter, as nn.init and as a tensor method with the mean
    positional: the contract's Normal(mean, std) for that name. A shift or a scale after it
    is not one Normal (only a shift of a mean-0 normal, a scale of a standard one, fold into
    one): it runs on the contract's values."""
    m = nn.Sequential(*[nn.Linear(32, 48, bias=False) for _ in range(4)]).to(dtype)
    with fusedinit.fuse(m, seed=SEED):
        nn.init.normal_(m[0].weight, mean=0.5, std=0.1)
        m[1].weight.data.normal_(-0.25, 2.0)
        nn.init.normal_(m[2].weight, mean=0.5, std=0.1)
        m[2].weight.data.add_(0.25)
        m[3].weight.data.normal_(0.5).mul_(0.1)
    assert sum(op_calls) == 4, "each written once by fusedinit"  # the mul_ flushes the queue
    assert_bitwise_equal(m[0].weight.detach(), reference_contract(
        fusedinit.normal_, (48, 32), "0.weight", 0.5, 0.1, dtype=dtype))
    assert_bitwise_equal(m[1].weight.detach(), reference_contract(
        fusedinit.normal_, (48, 32), "1.weight", -0.25, 2.0, dtype=dtype))
    shifted = reference_contract(fusedinit.normal_, (48, 32), "2.weight", 0.5, 0.1, dtype=dtype)
    assert_bitwise_equal(m[2].weight.detach(), shifted.add_(0.25))
    scaled = reference_contract(fusedinit.normal_, (48, 32), "3.weight", 0.5, 1.0, dtype=dtype)
    assert_bitwise_equal(m[3].weight.detach(), scaled.mul_(0.1))
