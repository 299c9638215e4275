"""The CUDA kernel's thread body, compiled by the host compiler and run over emulated grids,
against the reference bit for bit: the CUDA code path's test on machines without a GPU."""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusedinit
from conftest import DTYPES, assert_bitwise_equal
from fusedinit.testing import emulate_cuda_
from strategies import EXTREME_SPECS, SPEC, U64, raw_reference_of, reference_of, views

CHUNK = 32768  # launch_layout.h kChunk: elements of one tensor per block iteration
GEOMETRY = st.tuples(st.integers(1, 5), st.sampled_from([1, 3, 32, 64, 256]))

SPECS = [fusedinit.Normal(0.1, 1.5), fusedinit.Uniform(-1.0, 2.0),
         fusedinit.TruncNormal(0.0, 1.0, -1.5, 0.5), fusedinit.Constant(-0.25),
         fusedinit.Normal(0.0, 0.02, padding_idx=3)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensor=views(), spec=SPEC, seed=U64, geometry=GEOMETRY)
def test_emulated_cuda_equals_reference(tensor, spec, seed, geometry):
    grid, block = geometry
    expected = reference_of(tensor, spec, seed)
    emulate_cuda_([(tensor, spec)], seed=seed, grid=grid, block=block)
    assert_bitwise_equal(tensor, expected, f"{spec} {tensor.dtype} {tuple(tensor.shape)} "
                                           f"{tensor.stride()} grid {geometry}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("grid,block", [(1, 256), (3, 256), (7, 64), (2, 1)])
def test_tensor_straddles_blocks(dtype, spec, grid, block):
    """Tensors over several chunks, a tail unit cut by the end, a grid smaller or larger than
    the chunk count (the blocks loop), and a start that is not 16-byte aligned."""
    shape = (5, CHUNK // 2 + 3)  # 2.5 chunks + 15: the last unit is partial
    seed = 2**63 + 99
    expected = reference_of(torch.empty(shape, dtype=dtype), spec, seed)
    out = emulate_cuda_([(torch.empty(shape, dtype=dtype), spec)], seed=seed, grid=grid,
                        block=block)[0]
    assert_bitwise_equal(out, expected, "aligned")
    window = torch.empty(shape[0] * shape[1] + 1, dtype=dtype)[1:].view(shape)
    emulate_cuda_([(window, spec)], seed=seed, grid=grid, block=block)
    assert_bitwise_equal(window, expected, "start not 16-byte aligned")
    strided = torch.empty(shape[1], shape[0], dtype=dtype).t()
    emulate_cuda_([(strided, spec)], seed=seed, grid=grid, block=block)
    assert_bitwise_equal(strided, expected, "transposed")


@pytest.mark.parametrize("grid", [1, 2, 5, 64])
def test_multi_tensor_list(grid):
    """Mixed sizes, dtypes, layouts and specs in one launch; empty tensors skipped; every
    tensor equals the reference, so no chunk was written twice or missed."""
    items = [
        (torch.empty(1000, 64, dtype=torch.bfloat16), fusedinit.Normal(0, 0.02, padding_idx=0, stream=1)),
        (torch.empty(64, 64), fusedinit.TruncNormal(0, 0.02, -0.04, 0.04, stream=2)),
        (torch.empty(0, 5), fusedinit.Normal(stream=9)),
        (torch.empty(64), fusedinit.Constant(0.0)),
        (torch.empty(3), fusedinit.Normal(stream=4)),
        (torch.empty(64, dtype=torch.float16), fusedinit.Constant(1.0)),
        (torch.empty(17, 3, dtype=torch.float64), fusedinit.Uniform(-0.1, 0.1, stream=3)),
        (torch.empty(40, 30, dtype=torch.float16).t(), fusedinit.Normal(1, 2, stream=5)),
        (torch.empty(CHUNK * 3 + 8, dtype=torch.bfloat16)[8:], fusedinit.Normal(stream=6)),
        (torch.empty(()), fusedinit.Uniform(stream=7)),
    ]
    emulate_cuda_(items, seed=1234, grid=grid, block=32)
    for i, (tensor, spec) in enumerate(items):
        assert_bitwise_equal(tensor, reference_of(tensor, spec, 1234), f"items[{i}] {spec}")


def test_padding_row_in_the_vector_path():
    """Padding rows whose edges fall inside a 16-byte unit, for 2- and 4-byte dtypes."""
    for dtype in (torch.bfloat16, torch.float32):
        for cols in (5, 8, 13):
            for pad in (0, 1, 6, 9):
                spec = fusedinit.Normal(0.5, 2.0, padding_idx=pad)
                out = emulate_cuda_([(torch.empty(10, cols, dtype=dtype), spec)], seed=3,
                                    grid=2, block=3)[0]
                assert (out[pad] == 0).all()
                assert_bitwise_equal(out, reference_of(out, spec, 3), f"{dtype} {cols} {pad}")


def test_extreme_parameters():
    """Uniform endpoints, huge and tiny std (float16 overflow and subnormals), zero std."""
    for spec in EXTREME_SPECS:
        for dtype in DTYPES:
            out = torch.empty(4099, dtype=dtype)  # the raw op: the API refuses overflowing specs
            torch.ops.fusedinit_testing.emulate_cuda_init_(
                [out], [spec.kind], list(spec.op_params), [spec.stream], [-1], 11, 2, 256)
            assert_bitwise_equal(out, raw_reference_of(out, spec, 11), f"{spec} {dtype}")


def test_too_many_strided_dims_is_a_clear_error():
    view = torch.zeros([3] * 9)[(slice(0, 2),) * 9]  # 9 dims that cannot merge
    before = view.clone()
    with pytest.raises(RuntimeError, match=r"tensors\[0\] needs 9 strided dimensions"):
        emulate_cuda_([(view, fusedinit.Normal())], seed=1)
    assert torch.equal(view, before)
    merged = torch.empty([2] * 12)  # contiguous: any number of dims
    emulate_cuda_([(merged, fusedinit.Normal())], seed=1)
    assert_bitwise_equal(merged, reference_of(merged, fusedinit.Normal(), 1))


def test_cpu_tensors_only():
    with pytest.raises(ValueError, match="CPU tensors"):
        emulate_cuda_([(torch.empty(4, device="meta"), fusedinit.Normal())], seed=1)


@pytest.mark.skipif(torch.version.cuda is None or bool(os.environ.get("FUSEDINIT_NO_CUDA")),
                    reason="torch without CUDA: the extension is built without CUDA kernels")
def test_cuda_kernel_is_registered():
    """With a CUDA torch the build compiles and links the CUDA kernels (no GPU needed)."""
    assert torch._C._dispatch_has_kernel_for_dispatch_key("fusedinit::init_", "CUDA")
    assert "cuda" in fusedinit.available_backends()


def test_negative_zero_constant():
    for dtype in DTYPES:
        t = emulate_cuda_([(torch.empty(37, dtype=dtype), fusedinit.Constant(-0.0))], seed=1)[0]
        assert torch.signbit(t).all() and (t == 0).all()


@pytest.mark.parametrize("grid", [1, 3])
def test_more_tensors_than_one_launch_holds(grid):
    """300 tensors: the device splits them into launches of at most 128 descriptors (each
    descriptor table passed by value); every tensor is written once, by its own launch."""
    items = [(torch.empty(i % 7 + 1, 5 + i % 3, dtype=torch.bfloat16 if i % 2 else torch.float32),
              fusedinit.Normal(0.0, 1.0 + i, stream=i)) for i in range(300)]
    items[129] = (torch.empty(3 * CHUNK + 5), fusedinit.Uniform(-1.0, 1.0, stream=129))
    emulate_cuda_(items, seed=77, grid=grid, block=64)
    for i, (tensor, spec) in enumerate(items):
        assert_bitwise_equal(tensor, reference_of(tensor, spec, 77), f"items[{i}] {spec}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("start", [2**34 - CHUNK // 2, 2**34 - CHUNK, 2**34 - 8])
def test_philox_group_high_word_changes(dtype, start):
    """A shard of a 2^35-element tensor around index 2^34, where the Philox group (index / 4)
    reaches 2^32 and its high counter word changes: the vector loops keep only the low word
    while the high one stays the same (PhiloxLoop), a chunk across the change takes the
    general path, and the chunks after it run with high word 1."""
    from fusedinit import reference

    n = 3 * CHUNK + 8
    for spec in (fusedinit.Normal(0.5, 2.0, stream=3), fusedinit.Uniform(-1.0, 2.0, stream=4)):
        idx = torch.arange(start, start + n, dtype=torch.int64)
        expected = reference.values_at(idx, kind=spec.kind, params=list(spec.op_params), seed=11,
                                       stream=spec.stream, dtype=dtype)
        out = torch.empty(n, dtype=dtype)
        emulate_cuda_([(out, spec, (2**35,), (start,))], seed=11, grid=2, block=256)
        assert_bitwise_equal(out, expected, f"{spec} {dtype} start {start}")
