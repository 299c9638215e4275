"""The truncated normal in both tails (docs/rng.md section 3): each tail is sampled from its own
small probabilities, so [a, b] and its mirror [-b, -a] are exact mirror images and far-tail
intervals keep their resolution; bounds the quantile cannot reach are refused; and values
never leave [a, b], in float64 included (the bounds are rounded to float32 inward)."""
import math
import random

import numpy as np
import pytest
import torch
from scipy import stats

import fusedinit
from fusedinit import TruncNormal
from conftest import DTYPES, assert_bitwise_equal

N = 1 << 16
# (a, b) for N(0, 1): both tails, far tails, one-sided (a huge finite bound), straddling.
GRID = [(5.0, 6.0), (-6.0, -5.0), (5.5, 6.2), (-6.2, -5.5), (3.0, 1e30), (-1e30, -3.0),
        (3.5, 1e30), (-6.0, -4.0), (0.0, 1e30), (2.0, 3.0), (-1.0, 5.0), (1.0, 6.2),
        (-2.0, 2.0), (-0.5, 0.25), (-1e30, 1e30), (6.0, 6.2)]


def sample(spec, n=N, seed=11, dtype=torch.float32):
    return fusedinit.init_many_([(torch.empty(n, dtype=dtype), spec)], seed=seed)[0]


@pytest.mark.parametrize("a,b", GRID, ids=str)
def test_against_scipy_truncnorm(a, b):
    """KS and the first two moments against scipy's truncnorm, and enough distinct values:
    the upper tail used to be drawn as 1 - p with a 2^-24 step (6 values on [5, 6])."""
    x = sample(TruncNormal(0.0, 1.0, a, b)).double().numpy()
    dist = stats.truncnorm(a, b)
    assert x.min() >= a and x.max() <= b
    assert stats.kstest(x, dist.cdf).pvalue > 1e-4
    se = dist.std() / math.sqrt(N)
    assert abs(x.mean() - dist.mean()) < 5 * se, (x.mean(), dist.mean(), se)
    assert abs(x.var() / dist.var() - 1) < 0.05
    assert len(np.unique(x)) > N // 4


@pytest.mark.parametrize("a,b", [(ab) for ab in GRID if ab[0] != -ab[1]], ids=str)
@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (0.25, 0.5)])
def test_mirror_images_are_exact(a, b, mean, std):
    """TruncNormal(mean, std, a, b) and TruncNormal(-mean, std, -b, -a): value for value negated."""
    lo, hi = mean + std * a, mean + std * b
    x = sample(TruncNormal(mean, std, lo, hi))
    y = sample(TruncNormal(-mean, std, -hi, -lo))
    assert_bitwise_equal(y, -x, f"[{lo}, {hi}]")


@pytest.mark.parametrize("a,b", [(-11.0, -10.0), (10.0, 11.0), (-7.0, -6.5), (6.5, 7.0),
                                 (-9.0, -4.0), (4.0, 9.0)])
def test_bounds_beyond_the_quantiles_reach_are_refused(a, b):
    """Both orientations alike: an error naming the bounds, never a constant or a pile at a
    bound (-11..-10 used to fill b, its mirror used to be refused for another reason)."""
    t = torch.zeros(64)
    with pytest.raises(ValueError, match=r"reach of fusedinit's normal quantile"):
        fusedinit.trunc_normal_(t, 0.0, 1.0, a, b, seed=1)
    assert torch.equal(t, torch.zeros(64))


def test_reach_limit_keeps_what_it_can_sample():
    """Just inside the rule: at most 1e-6 of the mass lies beyond 6.23 sigma."""
    for a, b in [(-6.23, -6.0), (-1e30, -3.5), (3.5, 1e30)]:
        x = sample(TruncNormal(0.0, 1.0, a, b), n=4096)
        assert x.min() >= a and x.max() <= b


def _random_bounds(rng: random.Random):
    mean = rng.uniform(-1, 1)
    std = rng.uniform(0.05, 3)
    a = mean + std * rng.uniform(-3, 0.5)
    b = a + std * rng.uniform(0.01, 3)
    return mean, std, a, b


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_values_stay_inside_the_bounds_in_every_dtype(dtype):
    """torch.nn.init.trunc_normal_'s guarantee: float32 / float64 values in [a, b] exactly (the
    float32 nearest to a bound can lie outside it: the bounds are rounded inward), 16-bit ones in
    [round(a), round(b)]. Wide std makes many values land on the bounds."""
    rng = random.Random(5)
    outside = 0
    for k in range(200):
        mean, std, a, b = _random_bounds(rng)
        if k % 2:
            std *= 1e3  # most values clamp to a bound
        t = fusedinit.trunc_normal_(torch.empty(2048, dtype=dtype), mean, std, a, b, seed=k)
        if dtype in (torch.float32, torch.float64):
            lo, hi = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
        else:
            lo, hi = torch.tensor(a).to(dtype).double(), torch.tensor(b).to(dtype).double()
        v = t.double()
        outside += int(((v < lo) | (v > hi)).any())
    assert outside == 0


def test_float64_bounds_are_rounded_inward():
    """A bound whose nearest float32 lies outside it is reached by the next float32 inside."""
    a, b = 0.1, 0.30000000000000004  # float32(0.1) > 0.1, float32(b) > b
    spec = TruncNormal(0.2, 1e4, a, b)  # p_hi - p_lo ~ 100 float32 steps: the ends clamp
    lo, hi = spec.params()[2:4]
    assert a <= lo and hi <= b
    assert float(np.nextafter(np.float32(lo), np.float32(-1))) < a
    assert float(np.nextafter(np.float32(hi), np.float32(2))) > b
    x = sample(spec, dtype=torch.float64)
    assert x.min().item() == lo and x.max().item() == hi
