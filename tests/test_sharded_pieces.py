"""Hand-made blocks (global_shape / global_offset): few kernel entries for blocks partial on
inner dims, and non-contiguous blocks written through the strided path with runs."""
import pytest
import torch

import fusedinit
from fusedinit.ops.api import plan
from conftest import assert_bitwise_equal


def op_tensors(item) -> int:
    """How many tensors the op is given for one item."""
    return sum(len(columns.tensors) for columns in plan([item]).values())


def test_block_partial_on_two_inner_dims_is_few_pieces():
    """A (rows, 2, 4) block of a (rows, 4, 8) tensor: one piece per index of the smaller
    leading extent (2), not one per row (was rows pieces: 1 s for 50,000 rows)."""
    spec = fusedinit.Normal(stream=2)
    assert op_tensors((torch.empty(5000, 2, 4), spec, (5000, 4, 8), (0, 1, 2))) == 2
    assert op_tensors((torch.empty(3, 5000, 4), spec, (3, 9000, 8), (0, 7, 2))) == 3


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_block_partial_on_two_inner_dims_equals_the_full_tensor(backend):
    spec = fusedinit.Normal(0.1, 1.5, stream=4)
    full = fusedinit.init_many_([(torch.empty(300, 4, 8), spec)], seed=9)[0]
    block = torch.empty(300, 2, 4)
    fusedinit.init_many_([(block, spec, (300, 4, 8), (0, 1, 2))], seed=9, backend=backend)
    assert_bitwise_equal(block, full[:, 1:3, 2:6])


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_non_contiguous_column_block_equals_the_full_tensor(backend):
    """A transposed local block sharded on dim 1: a strided destination with runs of 4 global
    indices (the CPU strided path advanced a whole buffer per run and skipped the rest)."""
    spec = fusedinit.Uniform(-1.0, 1.0, stream=3)
    full = fusedinit.init_many_([(torch.empty(600, 10), spec)], seed=5)[0]
    local = torch.zeros(4, 600).t()  # (600, 4), column-major
    fusedinit.init_many_([(local, spec, (600, 10), (0, 3))], seed=5, backend=backend)
    assert_bitwise_equal(local.contiguous(), full[:, 3:7])
