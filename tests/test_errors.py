"""Bad input raises a clear exception naming the problem, and leaves the tensor untouched."""
import pytest
import torch

import fusedinit


def untouched(exc, fn, *args, match=None, **kwargs):
    t = args[0] if args and isinstance(args[0], torch.Tensor) else None
    before = t.clone() if t is not None and t.device.type != "meta" else None
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)
    if before is not None:
        assert torch.equal(before, t) or (torch.isnan(before) == torch.isnan(t)).all()


def filled(dtype=torch.float32):
    return torch.full((4, 3), 7.0, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64,
                                   torch.uint8])
def test_non_floating_dtype(dtype):
    t = torch.zeros(3, dtype=dtype)
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
                                    dict(std=-0.1), dict(b=float("inf")), dict(mean=3.0, std=0.0, a=-1.0, b=1.0)])
def test_bad_trunc_normal(kwargs):
    untouched(ValueError, fusedinit.trunc_normal_, filled(), **kwargs)


@pytest.mark.parametrize("idx", [4, -5, 100])
def test_padding_idx_out_of_range(idx):
    untouched(IndexError, fusedinit.normal_, filled(), padding_idx=idx, match="padding_idx")


def test_padding_idx_on_scalar():
    untouched(IndexError, fusedinit.normal_, torch.tensor(1.0), padding_idx=0)


def test_overlapping_memory():
    t = torch.zeros(3, 1).expand(3, 4)
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
    good, bad = filled(), torch.zeros(3, dtype=torch.int64)
    before = good.clone()
    with pytest.raises(TypeError, match=r"items\[1\]"):
        fusedinit.init_many_([(good, fusedinit.Normal()), (bad, fusedinit.Normal())], seed=1)
    assert torch.equal(good, before)
    with pytest.raises(IndexError):
        fusedinit.init_many_([(good, fusedinit.Normal()),
                              (filled(), fusedinit.Normal(padding_idx=9))], seed=1)
    assert torch.equal(good, before)
    with pytest.raises(TypeError):
        fusedinit.init_many_([(good, "normal")], seed=1)
    with pytest.raises(TypeError):
        fusedinit.init_many_([good], seed=1)


def test_op_rejects_inconsistent_lists():
    with pytest.raises(RuntimeError, match="per tensor"):
        torch.ops.fusedinit.init_([torch.empty(3)], [0, 0], [0.0] * 6, [0], [-1], 0)
    with pytest.raises(IndexError):
        torch.ops.fusedinit.init_([torch.empty(3, 2)], [0], [0.0] * 6, [0], [3], 0)
