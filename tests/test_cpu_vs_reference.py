"""The CPU kernel against the reference, bit for bit: shapes, views, dtypes, distributions,
seeds, streams, padding rows, kernel variants, thread counts and multi-tensor calls."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusedinit
import fusedinit.testing
from fusedinit.ops import op
from conftest import DTYPES, assert_bitwise_equal, isas
from strategies import EXTREME_SPECS, U64, raw_reference_of, reference_of as _reference_of, view_and_spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=view_and_spec(), seed=U64)
def test_cpu_equals_reference(case, seed):
    """Under every kernel variant this CPU runs (the reference computed once)."""
    tensor, spec = case
    expected = _reference_of(tensor, spec, seed)
    try:
        for isa in isas():
            fusedinit.testing.set_cpu_isa(isa)
            tensor.fill_(float("nan"))  # every element must be written again
            fusedinit.init_many_([(tensor, spec)], seed=seed, backend="cpu")
            assert_bitwise_equal(tensor, expected, f"{isa}: {spec} {tensor.dtype} {tuple(tensor.shape)}")
    finally:
        fusedinit.testing.set_cpu_isa("auto")


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(0, 40), pad=st.integers(-40, 39),
       dtype=st.sampled_from(DTYPES), seed=U64, transposed=st.booleans())
def test_padding_row(rows, cols, pad, dtype, seed, transposed):
    if not -rows <= pad < rows:
        pad = pad % rows
    base = torch.empty(cols, rows, dtype=dtype).t() if transposed else torch.empty(rows, cols, dtype=dtype)
    fusedinit.normal_(base, 0.5, 2.0, padding_idx=pad, seed=seed)
    plain = fusedinit.normal_(torch.empty(rows, cols, dtype=dtype), 0.5, 2.0, seed=seed)
    assert (base[pad] == 0).all() and not torch.signbit(base[pad]).any()
    keep = torch.ones(rows, dtype=torch.bool)
    keep[pad] = False
    assert_bitwise_equal(base[keep].contiguous(), plain[keep], "rows other than the padding row")
    assert_bitwise_equal(base, _reference_of(base, fusedinit.Normal(0.5, 2.0, padding_idx=pad), seed))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", [fusedinit.Normal(0.1, 1.5), fusedinit.Uniform(1.0, 2.0),
                                  fusedinit.TruncNormal(0.0, 1.0, -1.5, 0.5),
                                  fusedinit.Normal(0.0, 1.0, padding_idx=7)])
def test_every_kernel_variant_and_chunk_boundary(dtype, spec, cpu_isa):
    """Sizes straddling the 1024-element blocks and 65536-element work chunks, odd starts."""
    shape = (9, 65536 // 8 + 13)
    seed = 2**63 + 12345
    expected = _reference_of(torch.empty(shape, dtype=dtype), spec, seed)
    for isa in isas():
        cpu_isa(isa)
        out = fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=seed)[0]
        assert_bitwise_equal(out, expected, f"variant {isa}")
        window = torch.empty(shape[0] * shape[1] + 5, dtype=dtype)[5:].view(shape)
        fusedinit.init_many_([(window, spec)], seed=seed)
        assert_bitwise_equal(window, expected, f"variant {isa}, storage offset 5")


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_variant_writes_only_its_elements(dtype, cpu_isa):
    """A contiguous tensor that ends inside a larger storage: the vector kernels' masked tail
    stores must leave the bytes around it alone (a whole-vector store would overwrite up to 15
    elements past the end, which belong to another tensor or to nobody)."""
    spec = fusedinit.Normal(0.5, 2.0)
    for isa in isas():
        cpu_isa(isa)
        for start, n in [(0, 1), (3, 5), (1, 15), (16, 17), (7, 33), (5, 1024 + 9)]:
            storage = torch.full((start + n + 40,), float("nan"), dtype=dtype)
            before = storage.clone()
            view = storage[start:start + n]
            fusedinit.init_many_([(view, spec)], seed=6)
            where = f"variant {isa}, elements {start}..{start + n - 1}"
            assert_bitwise_equal(view, _reference_of(view, spec, 6), where)
            assert_bitwise_equal(storage[:start], before[:start], f"{where}: before them")
            assert_bitwise_equal(storage[start + n:], before[start + n:], f"{where}: after them")


def test_extreme_parameters_every_variant(cpu_isa):
    """Uniform endpoints, huge and tiny std (float16 overflow and subnormals), zero std, both
    far tails of the truncated normal: the raw op (the API refuses overflowing specs)."""
    expected = {(str(spec), dtype): raw_reference_of(torch.empty(4099, dtype=dtype), spec, 11)
                for spec in EXTREME_SPECS for dtype in DTYPES}
    for isa in isas():
        cpu_isa(isa)
        for spec in EXTREME_SPECS:
            for dtype in DTYPES:
                out = torch.empty(4099, dtype=dtype)
                op.init_([out], [spec.kind], list(spec.op_params), [spec.stream], [-1], 11)
                assert_bitwise_equal(out, expected[str(spec), dtype], f"variant {isa}, {spec} {dtype}")


def _layouts(shape, dtype):
    """The same logical tensor of `shape` in memory layouts that really differ: contiguous,
    channels_last, dims reversed in memory, every other element of a larger tensor, and a
    storage offset."""
    n, c, h, w = shape
    return {
        "contiguous": torch.empty(shape, dtype=dtype),
        "channels_last": torch.empty(shape, dtype=dtype).to(memory_format=torch.channels_last),
        "reversed dims": torch.empty(w, h, c, n, dtype=dtype).permute(3, 2, 1, 0),
        "inner dims swapped": torch.empty(n, c, w, h, dtype=dtype).transpose(2, 3),
        "step 2": torch.empty(n, c, h, 2 * w, dtype=dtype)[..., ::2],
        "offset, step 3 on dim 1": torch.empty(n * 3 * c * h * w + 7, dtype=dtype)[7:]
        .view(n, 3 * c, h, w)[:, ::3],
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", [fusedinit.Normal(0.5, 2.0, padding_idx=3, stream=4),
                                  fusedinit.Uniform(-1.0, 3.0, stream=5),
                                  fusedinit.TruncNormal(0.0, 1.0, -0.5, 1.5, stream=6)], ids=str)
def test_layout_invariance(spec, dtype):
    """The same logical tensor gets the same values whatever its memory layout."""
    shape = (6, 10, 7, 9)
    layouts = _layouts(shape, dtype)
    strides = {name: t.stride() for name, t in layouts.items()}
    assert len(set(strides.values())) == len(strides), f"layouts must differ: {strides}"
    assert layouts["channels_last"].is_contiguous(memory_format=torch.channels_last)
    expected = _reference_of(torch.empty(shape, dtype=dtype), spec, 31)
    for name, t in layouts.items():
        assert t.shape == shape
        fusedinit.init_many_([(t, spec)], seed=31)
        assert_bitwise_equal(t.contiguous(), expected, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_thread_count_invariance(dtype):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fusedinit.normal_(torch.empty(1 << 20, dtype=dtype), seed=9)
        torch.set_num_threads(2)
        two = fusedinit.normal_(torch.empty(1 << 20, dtype=dtype), seed=9)
    finally:
        torch.set_num_threads(threads)
    assert_bitwise_equal(one, two)


def test_init_many_is_one_call_with_independent_streams():
    items = [
        (torch.empty(1000, 64, dtype=torch.bfloat16), fusedinit.Normal(0, 0.02, padding_idx=0, stream=1)),
        (torch.empty(64, 64), fusedinit.TruncNormal(0, 0.02, -0.04, 0.04, stream=2)),
        (torch.empty(64), fusedinit.Constant(0.0)),
        (torch.empty(64, dtype=torch.float16), fusedinit.Constant(1.0)),
        (torch.empty(17, 3, dtype=torch.float64), fusedinit.Uniform(-0.1, 0.1, stream=3)),
        (torch.empty(0, 5), fusedinit.Normal()),
    ]
    calls = []
    real = torch.ops.fusedinit.init_

    class Spy:
        def __call__(self, *args):
            calls.append(len(args[0]))
            return real(*args)

    import fusedinit.ops.op as ops
    original = ops.torch.ops.fusedinit
    try:
        ops.torch.ops.fusedinit = type("NS", (), {"init_": Spy()})()
        fusedinit.init_many_(items, seed=77)
    finally:
        ops.torch.ops.fusedinit = original
    assert calls == [5], "one op call for all non-empty tensors of the device"
    for tensor, spec in items:
        assert_bitwise_equal(tensor, _reference_of(tensor, spec, 77), str(spec))
    # The same spec alone, in another list position, gives the same tensor.
    alone = fusedinit.init_many_([(torch.empty(64, 64), items[1][1])], seed=77)[0]
    assert_bitwise_equal(alone, items[1][0])


def test_seed_resolution_is_reproducible():
    torch.manual_seed(123)
    a = fusedinit.normal_(torch.empty(100))
    b = fusedinit.normal_(torch.empty(100))
    torch.manual_seed(123)
    assert_bitwise_equal(fusedinit.normal_(torch.empty(100)), a)
    assert_bitwise_equal(fusedinit.normal_(torch.empty(100)), b)
    assert not torch.equal(a, b)
    g = torch.Generator().manual_seed(5)
    c = fusedinit.uniform_(torch.empty(10), generator=g)
    assert_bitwise_equal(fusedinit.uniform_(torch.empty(10), generator=torch.Generator().manual_seed(5)), c)


def test_streams_and_seeds_differ():
    base = fusedinit.normal_(torch.empty(64), seed=1, stream=0)
    assert not torch.equal(base, fusedinit.normal_(torch.empty(64), seed=1, stream=1))
    assert not torch.equal(base, fusedinit.normal_(torch.empty(64), seed=2, stream=0))
    assert not torch.equal(base, fusedinit.normal_(torch.empty(64), seed=1 << 32, stream=0))
    assert not torch.equal(base, fusedinit.normal_(torch.empty(64), seed=1, stream=1 << 32))


def test_meta_and_empty_tensors():
    meta = torch.empty(3, 4, device="meta")
    assert fusedinit.normal_(meta, seed=1) is meta
    empty = torch.empty(0, 7, dtype=torch.bfloat16)
    assert fusedinit.trunc_normal_(empty, seed=1) is empty


def test_requires_grad_parameter():
    p = torch.nn.Parameter(torch.empty(10, 10))
    out = fusedinit.normal_(p, seed=3)
    assert out is p and p.requires_grad and p.grad is None
    assert_bitwise_equal(p.detach(), fusedinit.normal_(torch.empty(10, 10), seed=3))
