"""trunc_normal_ with an open side (a = -inf and / or b = +inf), as torch.nn.init takes it: the
public function, TruncNormal, and torch's trunc_normal_ folded under fuse. Refused only where
torch refuses (nan, a >= b). Bit-for-bit agreement of every backend with the reference on such
specs is in the shared EXTREME_SPECS / TRUNC_NORMAL strategies; the vectors in docs/rng.md."""
import math

import pytest
import torch
from scipy import stats
from torch import nn

import fusedinit
from conftest import assert_bitwise_equal
from fusedinit import param_stream

INF = math.inf
SEED = 4321
OPEN = [(0.0, 1.0, -INF, INF), (0.0, 1.0, 0.0, INF), (0.3, 0.5, -INF, 0.1),
        (1.0, 2.0, 3.0, INF), (-0.5, 0.02, -INF, -0.49)]


@pytest.mark.parametrize("mean, std, a, b", OPEN)
def test_open_sides_follow_scipys_truncnorm(mean, std, a, b):
    """KS test against scipy.stats.truncnorm. n = 2^18 and p > 1e-6: a true distribution
    fails one in a million; the KS statistic then allows ~0.005, far below what a wrong side
    (a half-normal drawn as a normal, a mirrored tail) would give."""
    x = fusedinit.trunc_normal_(torch.empty(1 << 18, dtype=torch.float64), mean, std, a, b,
                                seed=SEED)
    assert bool((x >= a).all()) and bool((x <= b).all())
    law = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert stats.kstest(x.numpy(), law.cdf).pvalue > 1e-6
    # The moments, from the sample size: |error| < 6 standard errors.
    assert abs(float(x.mean()) - law.mean()) < 6 * law.std() / math.sqrt(x.numel())


def test_a_normal_through_the_truncated_quantile():
    x = fusedinit.trunc_normal_(torch.empty(1 << 18), 0.0, 1.0, -INF, INF, seed=SEED)
    assert bool(torch.isfinite(x).all())
    assert stats.kstest(x.double().numpy(), stats.norm.cdf).pvalue > 1e-6


@pytest.mark.parametrize("a, b, error", [
    (float("nan"), 1.0, "a must not be nan"), (0.0, float("nan"), "b must not be nan"),
    (INF, INF, "a < b"), (-INF, -INF, "a < b"), (1.0, 1.0, "a < b"), (INF, 1.0, "a < b"),
    (2.0, -INF, "a < b")])
def test_refused_where_torch_refuses(a, b, error):
    t = torch.full((5,), 7.0)
    with pytest.raises(ValueError, match=error):
        fusedinit.trunc_normal_(t, 0.0, 1.0, a, b, seed=SEED)
    assert bool((t == 7.0).all()), "nothing is touched"
    with pytest.raises(ValueError, match=error):
        fusedinit.TruncNormal(0.0, 1.0, a, b)


def test_mean_and_std_stay_finite():
    with pytest.raises(ValueError, match="std must be finite"):
        fusedinit.TruncNormal(0.0, INF, -INF, INF)
    with pytest.raises(ValueError, match="mean must be finite"):
        fusedinit.TruncNormal(INF, 1.0, -INF, INF)


def test_bounds_beyond_float32_act_as_its_largest_value():
    wide, open_ = fusedinit.TruncNormal(0, 1, -1e39, 1e39), fusedinit.TruncNormal(0, 1, -INF, INF)
    big = torch.finfo(torch.float32).max
    assert wide.op_params[2:4] == (-big, big)
    assert open_.op_params[2:4] == (-INF, INF)
    assert wide.op_params[4:] == open_.op_params[4:]  # the same draw; no value reaches a bound
    x = fusedinit.trunc_normal_(torch.empty(4096), 0, 1, -1e39, 1e39, seed=SEED)
    y = fusedinit.trunc_normal_(torch.empty(4096), 0, 1, -INF, INF, seed=SEED)
    assert_bitwise_equal(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("mean, std, a, b", [(0.0, 0.02, -INF, INF), (0.0, 0.02, 0.0, INF),
                                             (0.01, 0.02, -INF, 0.03)])
def test_torch_trunc_normal_with_open_sides_is_one_trunc_normal(dtype, mean, std, a, b,
                                                                 op_calls):
    """torch's trunc_normal_ takes its rejection branch for these (more than 30% of the mass
    inside): under fuse it is the contract's TruncNormal with the same open sides."""
    lin = nn.Linear(16, 24, bias=False).to(dtype)
    with fusedinit.fuse(lin, seed=SEED):
        nn.init.trunc_normal_(lin.weight, mean=mean, std=std, a=a, b=b)
    assert op_calls == [1], "folded into one TruncNormal, not run as torch's loop"
    expected = fusedinit.trunc_normal_(torch.empty(24, 16, dtype=dtype), mean, std, a, b,
                                       seed=SEED, stream=param_stream("weight"),
                                       backend="reference")
    assert_bitwise_equal(lin.weight.detach(), expected)


@pytest.mark.parametrize("a, b", [(-INF, INF), (0.0, INF)])
def test_timm_trunc_normal_with_open_sides_is_one_trunc_normal(a, b, op_calls):
    timm_layers = pytest.importorskip("timm.layers")
    lin = nn.Linear(16, 24, bias=False)
    with fusedinit.fuse(lin, seed=SEED):
        timm_layers.trunc_normal_(lin.weight, std=0.02, a=a, b=b)
    assert op_calls == [1]
    expected = fusedinit.trunc_normal_(torch.empty(24, 16), 0.0, 0.02, a, b, seed=SEED,
                                       stream=param_stream("weight"), backend="reference")
    assert_bitwise_equal(lin.weight.detach(), expected)
