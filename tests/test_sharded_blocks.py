"""global_shape / global_offset: a block of a logical tensor gets exactly the values of those
elements in the logical tensor - every backend, dtype and distribution, any block shape."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fusedinit
from conftest import DTYPES, assert_bitwise_equal, assert_untouched
from fusedinit.testing import emulate_cuda_

SPECS = [fusedinit.Normal(0.1, 1.5, stream=5), fusedinit.Uniform(-1, 2, stream=6),
         fusedinit.TruncNormal(0, 1, -1.5, 0.5, stream=7), fusedinit.Constant(0.5),
         fusedinit.Normal(0, 0.02, padding_idx=3, stream=8)]


def run(backend, items, seed):
    if backend == "emulated-cuda":
        return emulate_cuda_(items, seed=seed, grid=3, block=32)
    return fusedinit.init_many_(items, seed=seed, backend=backend)


def blocks(shape):
    """Blocks of `shape` (slices per dim) with uneven, interior and edge cuts."""
    cuts = []
    for n in shape:
        cuts.append([slice(0, n), slice(1, n - 2), slice(n // 3, n // 3 + max(1, n // 4)),
                     slice(n - 1, n)])
    return itertools.product(*cuts)


@pytest.mark.parametrize("backend", ["cpu", "emulated-cuda", "reference"])
@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("shape", [(37, 53), (5, 7, 11)])
def test_blocks_equal_the_full_tensor(backend, spec, shape):
    seed = 2**63 + 17
    for dtype in (torch.float32, torch.bfloat16):
        full = fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=seed)[0]
        for block in blocks(shape):
            expected = full[block]
            local = torch.empty(expected.shape, dtype=dtype)
            offset = [s.start for s in block]
            run(backend, [(local, spec, shape, offset)], seed)
            assert_bitwise_equal(local, expected, f"{dtype} block {offset} {tuple(local.shape)}")


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 12), min_size=1, max_size=3), data=st.data(),
       dtype=st.sampled_from(DTYPES))
def test_random_blocks_cpu_and_emulated_cuda(shape, data, dtype):
    block = tuple(slice(a, b + 1) for a, b in
                  (sorted(data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2)))
                   for n in shape))
    spec = fusedinit.Normal(0, 1, padding_idx=data.draw(st.integers(0, shape[0] - 1)), stream=3)
    full = fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=1)[0]
    for backend in ("cpu", "emulated-cuda"):
        local = torch.empty(full[block].shape, dtype=dtype)
        run(backend, [(local, spec, shape, [s.start for s in block])], 1)
        assert_bitwise_equal(local, full[block], backend)


def test_blocks_reassemble_and_keyword_form():
    """Megatron-style column split by hand, through normal_'s keyword arguments."""
    full = fusedinit.normal_(torch.empty(64, 100), 0.0, 0.02, seed=3, stream=4)
    parts = []
    for rank, (lo, hi) in enumerate([(0, 34), (34, 67), (67, 100)]):
        part = torch.empty(64, hi - lo)
        fusedinit.normal_(part, 0.0, 0.02, seed=3, stream=4, global_shape=(64, 100),
                          global_offset=(0, lo))
        parts.append(part)
    assert_bitwise_equal(torch.cat(parts, dim=1), full)


def test_block_errors_leave_tensor_untouched():
    t = torch.arange(20, dtype=torch.float32).view(4, 5)
    for kwargs, match in [
        (dict(global_shape=(8, 5)), "go together"),
        (dict(global_shape=(8,), global_offset=(0,)), "one entry per"),
        (dict(global_shape=(8, 5), global_offset=(6, 0)), "outside"),
        (dict(global_shape=(8, 5), global_offset=(-1, 0)), "outside"),
    ]:
        with assert_untouched(t), pytest.raises(ValueError, match=match):
            fusedinit.normal_(t, seed=1, **kwargs)
    with assert_untouched(t), pytest.raises(IndexError, match="padding_idx 8 out of range"):
        fusedinit.normal_(t, seed=1, padding_idx=8, global_shape=(8, 5), global_offset=(0, 0))


def test_index_map_op_argument():
    t = torch.arange(3, dtype=torch.float32)
    for bad in ([-2, 0, 0], [0, 4, 3], [0, -1, 0], [0, 0]):
        with assert_untouched(t), pytest.raises(RuntimeError, match="index_map"):
            torch.ops.fusedinit.init_([t], [0], [0.0, 1, 0, 0, 0, 0], [0], [-1], 1, bad)


def test_no_full_tensor_is_materialized():
    """A 4 x 8 block of a 2^31 x 2^31 logical tensor (16 EiB as float32): only the block is
    ever allocated, and it holds the contract's values at those global indices."""
    from fusedinit import reference
    from fusedinit.ops.kinds import NORMAL

    n = 2**31
    rows, cols = range(n - 4, n), range(2**30, 2**30 + 8)
    local = torch.empty(4, 8)
    fusedinit.normal_(local, seed=5, stream=6, global_shape=(n, n), global_offset=(n - 4, 2**30))
    idx = torch.tensor([r * n + c for r in rows for c in cols], dtype=torch.int64)
    expected = reference.values_at(idx, kind=NORMAL, params=[0.0, 1.0, 0, 0, 0, 0], seed=5,
                                   stream=6, dtype=torch.float32).view(4, 8)
    assert_bitwise_equal(local, expected)
    emulated = torch.empty(4, 8)
    emulate_cuda_([(emulated, fusedinit.Normal(stream=6), (n, n), (n - 4, 2**30))], seed=5)
    assert_bitwise_equal(emulated, expected)


def test_column_shards_are_one_kernel_entry():
    """A block sharded on any one dim (and on dims 0 and 1 of a 3-D tensor) is one tensor for
    the kernels - runs of global indices a fixed stride apart - not one entry per row."""
    from fusedinit.ops.api import plan

    spec = fusedinit.Normal(stream=1)

    def op_tensors(item) -> int:
        return sum(len(columns.tensors) for columns in plan([item]).values())

    assert op_tensors((torch.empty(64, 33), spec, (64, 100), (0, 34))) == 1
    assert op_tensors((torch.empty(3, 4, 11), spec, (5, 7, 11), (1, 2, 0))) == 1
    assert op_tensors((torch.empty(5, 4, 6), spec, (5, 7, 11), (0, 2, 3))) == 4


# 3-D blocks partial on dims 0, 1 and 2 whose dim 1 is longer than dim 0: the kernels' pieces
# enumerate dim 0 (one piece per local row), so the padding row is a whole piece, found by its
# *global* row (block offset + local row). Each block starts above row 0 and holds the padding
# row at a local row other than the global one; one also holds a row whose local index equals
# the padding row's global index (a local/global mix-up would zero that one instead).
OFFSET_BLOCK_CASES = [
    # (global shape, block slices, padding_idx)
    ((5, 7, 11), (slice(2, 5), slice(1, 6), slice(3, 8)), 3),    # local row 1
    ((5, 7, 11), (slice(1, 5), slice(0, 6), slice(2, 9)), 3),    # local row 2; local 3 is row 4
    ((5, 7, 11), (slice(1, 5), slice(1, 7), slice(0, 10)), -2),  # -2 is row 3
    ((6, 9, 4), (slice(3, 6), slice(2, 8), slice(1, 3)), 4),     # local row 1
]


@pytest.mark.parametrize("backend", ["cpu", "emulated-cuda", "reference"])
@pytest.mark.parametrize("shape, block, padding_idx", OFFSET_BLOCK_CASES)
def test_padding_row_in_a_block_below_row_0(backend, shape, block, padding_idx):
    from fusedinit.ops.api import plan

    spec = fusedinit.Normal(0.25, 1.5, padding_idx=padding_idx, stream=11)
    seed = 2**64 - 5
    offset = [s.start for s in block]
    local_shape = tuple(s.stop - s.start for s in block)
    # The case takes the enumerated-dim-0 path: one kernel entry per local row.
    item = (torch.empty(local_shape), spec, shape, offset)
    assert sum(len(c.tensors) for c in plan([item]).values()) == local_shape[0]
    for dtype in (torch.float32, torch.bfloat16):
        full = fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=seed,
                                    backend="reference")[0]
        assert (full[padding_idx] == 0).all() and (full != 0).sum() > full[0].numel()
        local = torch.full(local_shape, float("nan"), dtype=dtype)
        run(backend, [(local, spec, shape, offset)], seed)
        assert_bitwise_equal(local, full[block], f"{dtype} block {offset} {local_shape}")
