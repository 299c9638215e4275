"""A bfloat16 tensor with more than 2^31 elements (~4.3 GB): 64-bit indexing end to end."""
import pytest
import torch

import fusedinit
from fusedinit import reference
from fusedinit.ops.kinds import NORMAL
from conftest import assert_bitwise_equal

pytestmark = pytest.mark.slow


def test_more_than_2_31_elements():
    rows, cols = 2**16 + 3, 2**15 + 1  # 2,147,647,491 elements > 2^31
    n = rows * cols
    assert n > 2**31
    t = torch.empty(rows, cols, dtype=torch.bfloat16)
    seed, stream, pad = 2**64 - 5, 11, rows - 2
    fusedinit.normal_(t, 0.0, 1.0, padding_idx=pad, seed=seed, stream=stream)
    flat = t.view(-1)
    for centre in (0, 2**31, n - 64, (pad - 1) * cols):
        idx = torch.arange(max(0, centre - 64), min(n, centre + 64), dtype=torch.int64)
        expected = reference.values_at(idx, kind=NORMAL, params=[0.0, 1.0, 0, 0, 0, 0], seed=seed,
                                       stream=stream, dtype=torch.bfloat16)
        assert_bitwise_equal(flat[idx], expected, f"around index {centre}")
    assert (t[pad] == 0).all()
    chunk = 1 << 27
    zeros = 0
    for start in range(0, n, chunk):
        part = flat[start:start + chunk]
        assert not torch.isnan(part).any(), f"NaN in [{start}, {start + chunk})"
        zeros += int((part == 0).sum())
    assert zeros == cols, "no element other than the padding row is zero"
