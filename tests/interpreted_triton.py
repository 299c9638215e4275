"""The Triton kernel run by Triton's interpreter on CPU tensors, against the reference bit
for bit. Run by test_triton.py in a subprocess with TRITON_INTERPRET=1 (the interpreter is
chosen when the kernel is decorated, so it cannot be switched inside one process)."""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings

import fusedinit
from conftest import DTYPES, assert_bitwise_equal
from fusedinit import triton as triton_backend
from strategies import EXTREME_SPECS, SPEC, U64, raw_reference_of, reference_of, views

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                reason="run by test_triton.py with TRITON_INTERPRET=1")

BLOCK = 4096  # fusedinit.triton.launch.BLOCK
SPECS = [fusedinit.Normal(0.1, 1.5, stream=2**63 + 5), fusedinit.Uniform(-1.0, 2.0),
         fusedinit.TruncNormal(0.0, 1.0, -1.5, 0.5), fusedinit.Constant(-0.25),
         fusedinit.Normal(0.0, 0.02, padding_idx=1)]


def triton_(items, seed):
    return fusedinit.init_many_(items, seed=seed, backend="triton")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_every_dtype_and_distribution(dtype, spec):
    """2.2 blocks with a partial last row; an unaligned start; a transposed (strided) view."""
    shape = (3, 3001)
    seed = 2**64 - 3
    expected = reference_of(torch.empty(shape, dtype=dtype), spec, seed)
    assert_bitwise_equal(triton_([(torch.empty(shape, dtype=dtype), spec)], seed)[0], expected,
                         "contiguous")
    window = torch.empty(shape[0] * shape[1] + 1, dtype=dtype)[1:].view(shape)
    triton_([(window, spec)], seed)
    assert_bitwise_equal(window, expected, "start not 16-byte aligned")
    strided = torch.empty(shape[1], shape[0], dtype=dtype).t()
    triton_([(strided, spec)], seed)
    assert_bitwise_equal(strided, expected, "transposed")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensor=views(max_side=40), spec=SPEC, seed=U64)
def test_random_views(tensor, spec, seed):
    expected = reference_of(tensor, spec, seed)
    triton_([(tensor, spec)], seed)
    assert_bitwise_equal(tensor, expected, f"{spec} {tensor.dtype} {tuple(tensor.shape)}")


def test_multi_tensor_list():
    storage = torch.empty(5000)
    items = [
        (torch.empty(100, 64, dtype=torch.bfloat16), fusedinit.Normal(0, 0.02, padding_idx=0, stream=1)),
        (torch.empty(64, 64), fusedinit.TruncNormal(0, 0.02, -0.04, 0.04, stream=2)),
        (torch.empty(0, 5), fusedinit.Normal(stream=9)),
        (torch.empty(64), fusedinit.Constant(0.0)),
        (storage[1:8], fusedinit.Normal(stream=4)),
        (storage[8:2100], fusedinit.Uniform(stream=10)),
        (torch.empty(64, dtype=torch.float16), fusedinit.Constant(1.0)),
        (torch.empty(17, 3, dtype=torch.float64), fusedinit.Uniform(-0.1, 0.1, stream=3)),
        (torch.empty(40, 30, dtype=torch.float16).t(), fusedinit.Normal(1, 2, stream=5)),
        (torch.empty(BLOCK * 2 + 8, dtype=torch.bfloat16)[8:], fusedinit.Normal(stream=6)),
        (torch.empty(()), fusedinit.Uniform(stream=7)),
    ]
    triton_(items, 1234)
    for i, (tensor, spec) in enumerate(items):
        assert_bitwise_equal(tensor, reference_of(tensor, spec, 1234), f"items[{i}] {spec}")


def test_extreme_parameters():
    for spec in EXTREME_SPECS:
        for dtype in DTYPES:
            out = torch.empty(1031, dtype=dtype)  # the raw launcher: the API refuses overflows
            triton_backend.init_([out], [spec.kind], list(spec.op_params), [spec.stream], [-1], 11)
            assert_bitwise_equal(out, raw_reference_of(out, spec, 11), f"{spec} {dtype}")


def test_every_word_pattern_through_the_transforms():
    """Counters whose words hit the clz extremes: a large tensor slice checked at its ends."""
    t = torch.empty(4 * BLOCK + 3)
    fusedinit.normal_(t, seed=0, backend="triton")
    assert_bitwise_equal(t, reference_of(t, fusedinit.Normal(), 0))


def test_too_many_strided_dims_is_a_clear_error():
    view = torch.zeros([3] * 9)[(slice(0, 2),) * 9]
    before = view.clone()
    with pytest.raises(RuntimeError, match=r"tensors\[0\] needs 9 strided dimensions"):
        triton_([(view, fusedinit.Normal())], 1)
    assert torch.equal(view, before)


def test_negative_zero_constant():
    t = triton_([(torch.empty(5, dtype=torch.bfloat16), fusedinit.Constant(-0.0))], 1)[0]
    assert torch.signbit(t).all() and (t == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocks_of_a_logical_tensor(dtype):
    """index offsets: aligned and unaligned (a row-split block) runs of global indices."""
    shape = (9, 37)
    spec = fusedinit.Normal(0.5, 2.0, padding_idx=4, stream=3)
    full = reference_of(torch.empty(shape, dtype=dtype), spec, 5)
    for block in [(slice(2, 7), slice(0, 37)), (slice(0, 9), slice(3, 30)),
                  (slice(4, 5), slice(1, 2)), (slice(1, 9), slice(36, 37))]:
        local = torch.empty(full[block].shape, dtype=dtype)
        fusedinit.init_many_([(local, spec, shape, [s.start for s in block])], seed=5,
                             backend="triton")
        assert_bitwise_equal(local, full[block], str(block))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_blocks_across_a_multiple_of_2_32_groups(dtype):
    """A shard whose Philox groups run from 2^32 - 500 over 2^32 (the counter's high word
    changes inside a block) and from 2^33 - 2 over 2^33 (at a block's start)."""
    spec = fusedinit.Normal(0.5, 2.0, stream=3)
    for start in (2**34 - 2000, 2**35 - 8):
        local = torch.empty(5000, dtype=dtype)
        placed = [(local, spec, (2**35 + 8192,), [start])]
        fusedinit.init_many_(placed, seed=5, backend="triton")
        expected = torch.empty(5000, dtype=dtype)
        fusedinit.init_many_([(expected, spec, (2**35 + 8192,), [start])], seed=5,
                             backend="reference")
        assert_bitwise_equal(local, expected, str(start))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("a, b", [(0.0, 1.0), (-3.0, -1.25)])
def test_uniform_16bit_words_that_round_up_to_b(dtype, a, b):
    """Blocks around words whose float32 value rounds to b in 16 bits: the next value below b
    there, as the reference writes (test_transforms.py checks the other backends)."""
    n, seed, stream = 1 << 16, 21, 3
    spec = fusedinit.Uniform(a, b, stream=stream)
    words = fusedinit.reference.stream_words(torch.arange(n), seed, stream)
    float32 = fusedinit.reference.values_from_words(words, spec.kind, spec.op_params)
    up = (float32.to(dtype).float() >= b).nonzero().flatten()[:3].tolist()
    assert len(up) == 3, "the case must reach the guard"
    for i in up:
        start = i - i % 256
        placed = lambda t: [(t, spec, (n,), [start])]  # noqa: E731
        local = triton_(placed(torch.empty(256, dtype=dtype)), seed)[0]
        expected = torch.empty(256, dtype=dtype)
        fusedinit.init_many_(placed(expected), seed=seed, backend="reference")
        assert expected[i - start].float() < b and (local.float() < b).all()
        assert_bitwise_equal(local, expected, f"block at {start}")
