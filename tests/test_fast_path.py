"""init_many_'s bulk path for the common call (plain dense tensors, specs without padding,
one device): it must give exactly the values of the item-by-item path and the reference, keep
every check (a failing call names the item and touches nothing), and leave anything unusual
to the item-by-item path. Issue 9, item 13: per-tensor cost."""
import contextlib

import pytest
import torch

import fusedinit
from fusedinit.ops import api
from conftest import assert_bitwise_equal

SPECS = [fusedinit.Normal(0.0, 0.02), fusedinit.Uniform(-0.1, 0.3, stream=5),
         fusedinit.TruncNormal(0.0, 1.0, -2.0, 2.0, stream=(1 << 64) - 1), fusedinit.Constant(1.5)]


def mixed_items(count=60):
    dtypes = [torch.float32, torch.bfloat16, torch.float64, torch.float16]
    return [(torch.empty(3 + k % 7, 2 + k % 3, dtype=dtypes[k % 4]), SPECS[k % 4])
            for k in range(count)]


def reference_values(items, seed):
    expected = [(torch.empty_like(t), spec) for t, spec in items]
    return fusedinit.init_many_(expected, seed=seed, backend="reference")


@pytest.fixture
def bulk_only(monkeypatch):
    """A context in which init_many_ fails if it falls back to the item-by-item checks."""
    def refuse(*args):
        raise AssertionError("the bulk path was not taken")

    @contextlib.contextmanager
    def guard():
        with monkeypatch.context() as patch:
            patch.setattr(api, "_check_item", refuse)
            yield
    return guard


def test_mixed_specs_and_dtypes_take_the_bulk_path_and_match_the_reference(bulk_only):
    items = mixed_items()
    items.append((torch.empty(0), SPECS[0]))  # empty tensors are fine too
    with bulk_only():
        out = fusedinit.init_many_(items, seed=11)
    assert all(a is b for a, (b, _) in zip(out, items))
    for (t, _), want in zip(items, reference_values(items, 11)):
        assert_bitwise_equal(t, want, str(t.shape))


def test_parameters_and_versions(bulk_only):
    params = [torch.nn.Parameter(torch.empty(4, 3)) for _ in range(5)]
    before = [p._version for p in params]
    with bulk_only():
        fusedinit.init_many_([(p, SPECS[0]) for p in params], seed=2)
    assert all(p._version > v for p, v in zip(params, before))
    assert all(p.requires_grad and p.grad_fn is None for p in params)


def test_views_of_one_buffer_that_do_not_overlap(bulk_only):
    flat = torch.empty(100)
    views = [flat[0:10], flat[10:40], flat[40:100].view(6, 10)]
    with bulk_only():
        fusedinit.init_many_([(v, SPECS[1]) for v in views], seed=4)
    for v, want in zip(views, reference_values([(v, SPECS[1]) for v in views], 4)):
        assert_bitwise_equal(v, want)


def test_the_same_tensor_twice_is_refused_naming_both_items():
    ts = [torch.zeros(8) for _ in range(5)]
    items = [(t, SPECS[0]) for t in ts[:4]] + [(ts[1], SPECS[1])]
    with pytest.raises(RuntimeError, match=r"items\[1\] and items\[4\] share memory"):
        fusedinit.init_many_(items, seed=1)
    assert all((t == 0).all() for t in ts)


def test_overlapping_views_are_refused_and_nothing_is_written():
    flat = torch.zeros(30)
    items = [(torch.zeros(4), SPECS[0]), (flat[0:20], SPECS[0]), (flat[19:30], SPECS[0])]
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError, match=r"items\[1\] and items\[2\] share memory"):
        fusedinit.init_many_(items)  # seed=None: not even the torch RNG is drawn
    assert torch.equal(torch.get_rng_state(), state)
    assert (flat == 0).all() and (items[0][0] == 0).all()


def test_an_inference_tensor_is_refused_naming_it():
    with torch.inference_mode():
        frozen = torch.zeros(5)
    items = [(torch.zeros(5), SPECS[0]), (frozen, SPECS[0])]
    with pytest.raises(RuntimeError, match=r"items\[1\] is an inference tensor"):
        fusedinit.init_many_(items, seed=1)
    assert (items[0][0] == 0).all()
    with torch.inference_mode():
        fusedinit.init_many_(items, seed=1)  # allowed inside InferenceMode, as torch's ops
    assert_bitwise_equal(frozen, reference_values(items, 1)[1])


def test_a_spec_too_large_for_a_dtype_is_refused_naming_the_item():
    big = fusedinit.Normal(0.0, 1e5)  # beyond float16, fine for float32
    items = [(torch.zeros(4), big), (torch.zeros(4, dtype=torch.float16), big)]
    with pytest.raises(ValueError, match=r"items\[1\] would get inf"):
        fusedinit.init_many_(items, seed=1)
    assert (items[0][0] == 0).all()
    # The same spec on float32 and a small one on float16: each pair is fine.
    items[1] = (items[1][0], SPECS[0])
    fusedinit.init_many_(items, seed=1)
    for (t, _), want in zip(items, reference_values(items, 1)):
        assert_bitwise_equal(t, want)


def test_unusual_items_still_work_item_by_item():
    """Non-contiguous views, padding rows, 4-tuples and lists all leave the bulk path and get
    exactly their reference values."""
    base = torch.empty(6, 8)
    items = [(base[:, ::2], SPECS[0]), (torch.empty(5, 3), fusedinit.Normal(padding_idx=2)),
             (torch.empty(2, 4), SPECS[1], (4, 4), (2, 0)), [torch.empty(7), SPECS[2]]]
    fusedinit.init_many_(items, seed=9)
    expected = [(torch.empty_like(item[0]),) + tuple(item[1:]) for item in items]
    fusedinit.init_many_(expected, seed=9, backend="reference")
    for item, want in zip(items, expected):
        assert_bitwise_equal(item[0], want[0])


def test_backend_reference_and_meta_tensors_leave_the_bulk_path():
    t = torch.empty(6)
    fusedinit.init_many_([(t, SPECS[0])], seed=3, backend="reference")
    assert_bitwise_equal(t, fusedinit.init_many_([(torch.empty(6), SPECS[0])], seed=3)[0])
    meta = torch.empty(6, device="meta")
    assert fusedinit.init_many_([(meta, SPECS[0]), (torch.empty(2), SPECS[0])], seed=1)[0] is meta
    with pytest.raises(ValueError, match="backend='cuda' cannot fill"):
        fusedinit.init_many_([(torch.empty(2), SPECS[0])], seed=1, backend="cuda")


def test_padding_rows_take_the_bulk_path_and_a_bad_one_is_named(bulk_only):
    """An embedding with padding_idx among plain pairs (every transformer) stays on the bulk
    path; an out-of-range padding_idx leaves it and is reported naming the item."""
    items = mixed_items(12)
    items.insert(3, (torch.empty(9, 4), fusedinit.Normal(0.0, 1.0, padding_idx=-2)))
    with bulk_only():
        fusedinit.init_many_(items, seed=6)
    for (t, _), want in zip(items, reference_values(items, 6)):
        assert_bitwise_equal(t, want)
    assert (items[3][0][7] == 0).all()
    zeros = [(torch.zeros(3), SPECS[0]), (torch.zeros(3, 2), fusedinit.Normal(padding_idx=3))]
    with pytest.raises(IndexError, match=r"padding_idx 3 out of range for dim 0 of size 3 "
                                         r"\(items\[1\]\)"):
        fusedinit.init_many_(zeros, seed=1)
    assert all((t == 0).all() for t, _ in zeros)
