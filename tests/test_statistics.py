"""Distribution quality on >= 10^7 samples; every bound is derived from the sample size
(6 standard errors, or a p-value floor of 1e-6 for KS and chi-square tests)."""
import math

import numpy as np
import pytest
import torch
from scipy import special, stats

import fusedinit

N = 10_000_000
Z = 6.0  # standard errors allowed: a false alarm has probability ~2e-9 per check


def moments(x: np.ndarray):
    x = x.astype(np.float64)
    m = x.mean()
    d = x - m
    var = (d * d).mean()
    skew = (d**3).mean() / var**1.5
    kurt = (d**4).mean() / var**2 - 3.0
    return m, var, skew, kurt


def check_moments(x, mean, var, skew, ex_kurt, mu4):
    n = x.size
    m, v, s, k = moments(x)
    assert abs(m - mean) < Z * math.sqrt(var / n), ("mean", m, mean)
    assert abs(v - var) < Z * math.sqrt((mu4 - var**2) / n), ("variance", v, var)
    assert abs(s - skew) < Z * math.sqrt(6.0 / n), ("skewness", s, skew)
    assert abs(k - ex_kurt) < Z * math.sqrt(24.0 / n), ("excess kurtosis", k, ex_kurt)


def test_normal_moments_and_ks():
    x = fusedinit.normal_(torch.empty(N), 1.5, 2.0, seed=101).numpy()
    check_moments(x, 1.5, 4.0, 0.0, 0.0, 3 * 16.0)
    assert stats.kstest(x, stats.norm(1.5, 2.0).cdf).pvalue > 1e-6


def test_uniform_moments_and_ks():
    a, b = -1.0, 3.0
    x = fusedinit.uniform_(torch.empty(N), a, b, seed=102).numpy()
    w = b - a
    check_moments(x, (a + b) / 2, w * w / 12, 0.0, -1.2, w**4 / 80)
    assert x.min() >= a and x.max() < b
    assert stats.kstest(x, stats.uniform(a, w).cdf).pvalue > 1e-6


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.5, 1.0, -0.5, 3.0),
                                          (0.0, 1.0, 1.0, 4.0)])
def test_trunc_normal_moments_and_ks(mean, std, a, b):
    x = fusedinit.trunc_normal_(torch.empty(N), mean, std, a, b, seed=103).numpy()
    dist = stats.truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    m, v, s, k = dist.stats(moments="mvsk")
    mu4 = (float(k) + 3.0) * float(v) ** 2
    check_moments(x, float(m), float(v), float(s), float(k), mu4)
    assert x.min() >= a and x.max() <= b
    lo, hi = stats.norm.cdf((a - mean) / std), stats.norm.cdf((b - mean) / std)
    cdf = lambda v: (special.ndtr((v - mean) / std) - lo) / (hi - lo)  # noqa: E731 (fast exact CDF)
    assert stats.kstest(x, cdf).pvalue > 1e-6


def test_bfloat16_histogram_chi_square():
    """Counts of each bfloat16 value against the exact probability of rounding N(0,1) to it."""
    x = fusedinit.normal_(torch.empty(N, dtype=torch.bfloat16), seed=104)
    values, counts = torch.unique(x.float(), return_counts=True)
    grid = torch.arange(-(2**15), 2**15, dtype=torch.int64)  # every finite bf16 bit pattern
    allv = torch.unique(grid.to(torch.int16).view(torch.bfloat16).float())
    allv = allv[torch.isfinite(allv)].double().numpy()
    allv = allv[np.abs(allv) < 8]
    edges = np.concatenate([[-np.inf], (allv[1:] + allv[:-1]) / 2, [np.inf]])
    probs = np.diff(stats.norm.cdf(edges))
    observed = np.zeros_like(probs)
    pos = np.searchsorted(allv, values.double().numpy())
    assert np.allclose(allv[pos], values.double().numpy()), "a sample that is not a bf16 value"
    observed[pos] = counts.numpy()
    # Merge neighbouring values until every bin expects at least 20 samples.
    exp_bins, obs_bins, e_acc, o_acc = [], [], 0.0, 0.0
    for p, o in zip(probs * N, observed):
        e_acc += p
        o_acc += o
        if e_acc >= 20:
            exp_bins.append(e_acc)
            obs_bins.append(o_acc)
            e_acc = o_acc = 0.0
    exp_bins[-1] += e_acc
    obs_bins[-1] += o_acc
    exp_bins = np.array(exp_bins) * (N / np.sum(exp_bins))
    assert len(exp_bins) > 1000
    assert stats.chisquare(obs_bins, exp_bins).pvalue > 1e-6


def test_full_tails():
    """Over 10^8 samples |z| > 5 must occur (expected ~57 times); torch's bf16 randn stops at 3.5."""
    x = fusedinit.normal_(torch.empty(100_000_000), seed=105)
    biggest = x.abs().max().item()
    assert 5.0 < biggest < 6.3
    beyond = int((x.abs() > 5.0).sum())
    expected = 1e8 * 2 * stats.norm.sf(5.0)
    assert abs(beyond - expected) < Z * math.sqrt(expected)
    xb = fusedinit.normal_(torch.empty(100_000_000, dtype=torch.bfloat16), seed=105)
    assert xb.float().abs().max().item() > 5.0
