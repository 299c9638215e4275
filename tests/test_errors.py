"""Bad input raises a clear exception naming the problem, and leaves the tensor untouched."""
import pytest
import torch

import fusedinit
from conftest import assert_untouched


def untouched(exc, fn, *args, match=None, **kwargs):
    """fn(*args, **kwargs) raises `exc` and leaves the bytes of its tensor argument's storage
    exactly as they were."""
    t = args[0] if args and isinstance(args[0], torch.Tensor) else None
    with assert_untouched(*([t] if t is not None else [])):
        with pytest.raises(exc, match=match):
            fn(*args, **kwargs)


def filled(dtype=torch.float32):
    """A tensor whose values a write could not reproduce by chance: distinct values, a NaN with
    a payload, -0.0 (a write of +0.0 or of another NaN changes the bits)."""
    t = torch.arange(12, dtype=torch.float64).add_(7.25).to(dtype).view(4, 3)
    t[1, 1] = -0.0
    bits = t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    bits[2, 2] = {2: 0x7FC1, 4: 0x7FC00123, 8: 0x7FF8000000000123}[t.element_size()]
    return t


def test_untouched_catches_a_write_before_the_exception():
    """The helper itself: a function that writes (even only the same values as NaN of another
    payload, or +0.0 over -0.0, or outside the view) and then raises must fail it."""
    def write_then_raise(value, where):
        def fn(t, **kwargs):
            t.view(-1)[where] = value
            raise ValueError("bad")
        return fn

    for value, where in [(0.5, 0), (float("nan"), 8), (0.0, 4)]:
        with pytest.raises(AssertionError, match="was written"):
            untouched(ValueError, write_then_raise(value, where), filled())
    base = filled()
    view = base[:2]

    def write_outside(t, **kwargs):
        base[3, 0] = 1.0
        raise ValueError("bad")

    with pytest.raises(AssertionError, match="was written"):
        untouched(ValueError, write_outside, view)

    def raise_only(t, **kwargs):
        raise ValueError("bad")

    untouched(ValueError, raise_only, filled())


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64,
                                   torch.uint8])
def test_non_floating_dtype(dtype):
    t = (torch.arange(3) + 5).to(dtype)  # nonzero: a write of zeros would show
    for fn in (fusedinit.normal_, fusedinit.uniform_, fusedinit.trunc_normal_):
        untouched(TypeError, fn, t, match="dtype")


@pytest.mark.parametrize("kwargs", [dict(std=-1.0), dict(std=float("nan")), dict(mean=float("inf")),
                                    dict(mean=float("nan")), dict(std=1e39)])
def test_bad_normal_params(kwargs):
    untouched(ValueError, fusedinit.normal_, filled(), **kwargs)


@pytest.mark.parametrize("a,b", [(1.0, 0.0), (0.0, float("inf")), (float("nan"), 1.0),
                                 (-3e38, 3e38)])
def test_bad_uniform_bounds(a, b):
    untouched(ValueError, fusedinit.uniform_, filled(), a, b)


@pytest.mark.parametrize("kwargs", [dict(a=1.0, b=1.0), dict(a=2.0, b=-2.0), dict(a=10.0, b=11.0),
                                    dict(std=-0.1), dict(b=float("nan")), dict(a=float("inf"), b=float("inf")),
                                    dict(mean=3.0, std=0.0, a=-1.0, b=1.0)])
def test_bad_trunc_normal(kwargs):
    untouched(ValueError, fusedinit.trunc_normal_, filled(), **kwargs)


@pytest.mark.parametrize("idx", [4, -5, 100])
def test_padding_idx_out_of_range(idx):
    untouched(IndexError, fusedinit.normal_, filled(), padding_idx=idx, match="padding_idx")


def test_padding_idx_on_scalar():
    untouched(IndexError, fusedinit.normal_, torch.tensor(1.0), padding_idx=0)


def test_overlapping_memory():
    t = torch.tensor([[1.5], [2.5], [3.5]]).expand(3, 4)
    untouched(RuntimeError, fusedinit.normal_, t, match="share memory")


@pytest.mark.parametrize("seed", [-1, 2**64, 2**70])
def test_seed_out_of_range(seed):
    untouched(ValueError, fusedinit.normal_, filled(), seed=seed, match="seed")


@pytest.mark.parametrize("stream", [-1, 2**64])
def test_stream_out_of_range(stream):
    untouched(ValueError, fusedinit.uniform_, filled(), stream=stream, match="stream")


def test_seed_wrong_type():
    untouched(TypeError, fusedinit.normal_, filled(), seed=1.5)
    untouched(TypeError, fusedinit.normal_, filled(), seed=True)


def test_unknown_backend():
    untouched(ValueError, fusedinit.normal_, filled(), backend="tpu", match="backend")


def test_init_many_checks_everything_before_writing():
    good, bad, other = filled(), torch.full((3,), 4, dtype=torch.int64), filled(torch.bfloat16)
    with assert_untouched(good, bad, other):
        with pytest.raises(TypeError, match=r"items\[1\]"):
            fusedinit.init_many_([(good, fusedinit.Normal()), (bad, fusedinit.Normal()),
                                  (other, fusedinit.Uniform())], seed=1)
    padded = filled()
    with assert_untouched(good, padded, other):
        with pytest.raises(IndexError):
            fusedinit.init_many_([(good, fusedinit.Normal()), (other, fusedinit.Normal()),
                                  (padded, fusedinit.Normal(padding_idx=9))], seed=1)
    with assert_untouched(good):
        with pytest.raises(TypeError):
            fusedinit.init_many_([(good, "normal")], seed=1)
        with pytest.raises(TypeError):
            fusedinit.init_many_([good], seed=1)


def test_op_rejects_inconsistent_lists():
    t, u = filled(), filled()
    with assert_untouched(t):
        with pytest.raises(RuntimeError, match="per tensor"):
            torch.ops.fusedinit.init_([t], [0, 0], [0.0] * 6, [0], [-1], 0)
    with assert_untouched(u):
        with pytest.raises(IndexError):
            torch.ops.fusedinit.init_([u], [0], [0.0] * 6, [0], [4], 0)
