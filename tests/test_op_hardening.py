"""The op and the public functions behave like torch's in-place ops: autograd bookkeeping,
memory that is shared, nothing touched (not even the torch RNG) when a call fails, values the
destination dtype cannot hold, tensors that are not dense, torch.compile."""
import pytest
import torch

import fusedinit
from fusedinit import reference
from fusedinit.ops.kinds import NORMAL
from conftest import assert_bitwise_equal

NORMAL_PARAMS = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def op_fill(t, seed=3):
    torch.ops.fusedinit.init_([t], [NORMAL], NORMAL_PARAMS, [0], [-1], seed)


def expected(shape, dtype=torch.float32, seed=3, **spec):
    out = torch.empty(shape, dtype=dtype)
    return fusedinit.normal_(out, seed=seed, backend="reference", **spec)


# Item 5: autograd's in-place bookkeeping ------------------------------------------------------

@pytest.mark.parametrize("fill", [lambda t: fusedinit.normal_(t, seed=1),
                                  lambda t: fusedinit.init_many_([(t, fusedinit.Constant(0.5))]),
                                  lambda t: op_fill(t)], ids=["normal_", "init_many_", "op"])
def test_write_bumps_the_version(fill):
    t = torch.empty(6)
    before = t._version
    with torch.no_grad():
        fill(t)
    assert t._version > before


@pytest.mark.parametrize("backend", [None, "reference"])
def test_backward_refuses_a_saved_tensor_that_was_overwritten(backend):
    """As after torch.nn.init.normal_: sin saved b, so backward must not use the new values."""
    a = torch.randn(8, requires_grad=True)
    b = a * 2
    out = b.sin().sum()
    fusedinit.normal_(b, seed=1, backend=backend)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_raw_op_on_a_saved_tensor_makes_backward_fail():
    a = torch.randn(8, requires_grad=True)
    b = a * 2
    out = b.sin().sum()
    with torch.no_grad():
        op_fill(b)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_leaf_that_requires_grad_as_torch_nn_init():
    w = torch.nn.Parameter(torch.empty(4, 5))
    assert fusedinit.normal_(w, seed=3) is w  # the public functions write under no_grad
    assert_bitwise_equal(w.detach(), expected((4, 5)))
    assert w.requires_grad and w.is_leaf and w.grad_fn is None
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        op_fill(w)  # grad mode on: refused, as torch's in-place ops refuse it
    with torch.no_grad():
        op_fill(w)


def test_raw_op_refuses_a_non_leaf_that_requires_grad_in_grad_mode():
    b = torch.randn(4, requires_grad=True) * 2
    before = b.detach().clone()
    with pytest.raises(RuntimeError, match="no derivative"):
        op_fill(b)
    assert torch.equal(b.detach(), before)


@pytest.mark.parametrize("fill", [lambda t: fusedinit.normal_(t, seed=3),
                                  lambda t: fusedinit.normal_(t, seed=3, backend="reference"),
                                  op_fill], ids=["normal_", "reference", "op"])
def test_inference_tensor_only_inside_inference_mode(fill):
    with torch.inference_mode():
        t = torch.zeros(5)
    with pytest.raises(RuntimeError, match="inference tensor"):
        fill(t)
    assert torch.equal(t, torch.zeros(5))
    with torch.inference_mode():
        fill(t)
    assert_bitwise_equal(t.clone(), expected(5))


# Item 6: memory shared within a tensor or between items ---------------------------------------

def overlapping_views():
    base = torch.arange(10, dtype=torch.float32)
    return [("unfold", base, base.unfold(0, 4, 2)),
            ("as_strided", base, base.as_strided((3, 3), (2, 1))),
            ("expand", base, base[:1].expand(3))]


@pytest.mark.parametrize("case", range(3))
def test_overlapping_views_are_refused(case):
    name, base, view = overlapping_views()[case]
    before = base.clone()
    with pytest.raises(RuntimeError, match="share memory"):
        fusedinit.normal_(view, seed=1)
    with pytest.raises(RuntimeError, match="share memory"):
        op_fill(view)
    assert torch.equal(base, before), name


@pytest.mark.parametrize("make", [lambda b: b.view(4, 6)[:, ::2],
                                  lambda b: b.as_strided((3, 2), (2, 3)),
                                  lambda b: b.view(2, 3, 4).permute(2, 0, 1)[1:, :, ::2]],
                         ids=["every-other-column", "interleaved-as_strided", "permuted-slice"])
def test_views_that_torch_finds_too_hard_but_do_not_overlap_are_filled(make):
    view = make(torch.zeros(24))
    assert torch._debug_has_internal_overlap(view) == 2  # torch's "too hard"
    fusedinit.normal_(view, seed=3)
    assert_bitwise_equal(view.contiguous(), expected(view.shape))
    again = make(torch.zeros(24))
    op_fill(again)
    assert_bitwise_equal(again.contiguous(), expected(view.shape))


def test_init_many_refuses_items_that_share_memory():
    t = torch.zeros(12)
    spec = fusedinit.Normal()
    cases = [[(t, spec), (t, spec)],                                # the same tensor twice
             [(t[:7], spec), (t[5:], spec)],                        # overlapping slices
             [(t.view(3, 4)[:, 1:3], spec), (t.view(3, 4)[1], spec)],  # crossing views
             [(t, spec), (torch.zeros(3), spec), (t.view(4, 3)[2], spec)]]
    for items in cases:
        with pytest.raises(RuntimeError, match=r"items\[\d\] and items\[\d\] share memory"):
            fusedinit.init_many_(items, seed=1)
        assert torch.equal(t, torch.zeros(12))


def test_init_many_accepts_disjoint_views_of_one_tensor():
    t = torch.zeros(4, 6)
    even, odd = t[:, ::2], t[:, 1::2]  # address ranges intersect, elements do not
    fusedinit.init_many_([(even, fusedinit.Normal()), (odd, fusedinit.Constant(2.0))], seed=3)
    assert_bitwise_equal(even.contiguous(), expected((4, 3)))
    assert torch.equal(odd, torch.full((4, 3), 2.0))


def test_float16_view_of_a_float32_item_is_shared_memory():
    t = torch.zeros(8)
    with pytest.raises(RuntimeError, match="share memory"):
        fusedinit.init_many_([(t[4:], fusedinit.Normal()),
                              (t.view(torch.float16)[:10], fusedinit.Normal())], seed=1)


# Item 7: nothing touched on error, not even the RNG ---------------------------------------------

def test_reference_backend_writes_nothing_when_a_later_item_fails():
    first = torch.zeros(4)
    with torch.inference_mode():
        second = torch.zeros(4)
    with pytest.raises(RuntimeError, match="inference tensor"):
        fusedinit.init_many_([(first, fusedinit.Normal()), (second, fusedinit.Normal())],
                             seed=1, backend="reference")
    assert torch.equal(first, torch.zeros(4))


@pytest.mark.parametrize("call", [
    lambda: fusedinit.normal_(torch.zeros(4), backend="triton"),  # CPU tensor, no interpreter
    lambda: fusedinit.normal_(torch.zeros(4), backend="cuda"),
    lambda: fusedinit.init_many_([(torch.zeros(4), fusedinit.Normal()),
                                  (torch.zeros(4, dtype=torch.int32), fusedinit.Normal())]),
    lambda: fusedinit.normal_(torch.zeros(4, dtype=torch.float16), std=1e5),
], ids=["triton-on-cpu", "cuda-on-cpu", "bad-dtype", "overflow"])
def test_failing_call_does_not_draw_from_the_torch_rng(call, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        call()
    assert torch.equal(torch.get_rng_state(), state)


# Item 8: values the destination dtype cannot hold -----------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e39])
def test_constant_gets_the_same_validation_as_other_specs(value):
    with pytest.raises(ValueError, match="value"):
        fusedinit.Constant(value)


def test_uniform_bounds_beyond_float16_are_refused_like_torch():
    t = torch.zeros(16, dtype=torch.float16)
    with pytest.raises(RuntimeError):
        torch.nn.init.uniform_(t.clone(), -1e5, -7e4)  # what torch does with the same bounds
    with pytest.raises(ValueError, match="float16"):
        fusedinit.uniform_(t, -1e5, -7e4, seed=1)
    assert torch.equal(t, torch.zeros(16, dtype=torch.float16))
    ok = fusedinit.uniform_(t, -65504.0, 65504.0, seed=1)
    assert torch.isfinite(ok).all()


@pytest.mark.parametrize("dtype,std", [(torch.float16, 2e4), (torch.bfloat16, 1e38),
                                       (torch.float32, 1e38)])
def test_normal_that_would_overflow_the_dtype_is_refused(dtype, std):
    t = torch.zeros(8, dtype=dtype)
    with pytest.raises(ValueError, match=str(dtype)):
        fusedinit.normal_(t, std=std, seed=1)
    assert torch.equal(t, torch.zeros(8, dtype=dtype))


def test_largest_normal_values_stay_finite():
    """std just inside the bound: the most extreme words give finite values."""
    from fusedinit.ops.specs import Z_MAX

    std = 65504.0 / Z_MAX * (1 - 1e-3)
    t = torch.empty(4, dtype=torch.float16)
    words_with_extreme_z = torch.tensor([0, 0x80000000, 1, 0x80000001])
    values = reference.round_to(reference.values_from_words(
        words_with_extreme_z, NORMAL, [0.0, std, 0, 0, 0, 0]), torch.float16, NORMAL, None)
    assert torch.isfinite(values).all() and values.abs().max() > 6e4
    fusedinit.normal_(t, std=std, seed=1)  # accepted


def test_trunc_normal_bound_is_the_reachable_range():
    t = torch.zeros(64, dtype=torch.float16)
    fusedinit.trunc_normal_(t, 0.0, 1.0, -1e6, 1e6, seed=1)  # the normal never reaches 1e6
    assert torch.isfinite(t).all()
    with pytest.raises(ValueError, match="float16"):
        fusedinit.trunc_normal_(t, 6e4, 1e4, 0.0, 1e5, seed=1)


# Item 9: layout first ---------------------------------------------------------------------------

@pytest.mark.parametrize("make,name", [
    (lambda: torch.zeros(3, 3).to_sparse(), "sparse_coo"),
    (lambda: torch.zeros(3, 3).to_sparse_csr(), "sparse_csr"),
    (lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]), "nested"),
    (lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)],
                                        layout=torch.jagged), "nested"),
], ids=["coo", "csr", "nested", "jagged"])
def test_non_dense_layouts_are_named(make, name):
    with pytest.raises(TypeError, match=name):
        fusedinit.normal_(make(), seed=1)


# Item 10: the public functions compile with fullgraph ------------------------------------------

@pytest.mark.parametrize("fill", [
    lambda t: fusedinit.normal_(t, seed=1234),
    lambda t: fusedinit.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04, seed=1234),
    lambda t: fusedinit.init_many_([(t, fusedinit.Uniform(-1.0, 1.0))], seed=1234)[0],
], ids=["normal_", "trunc_normal_", "init_many_"])
def test_public_functions_compile_with_fullgraph(fill):
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: fill(t) * 1, backend="aot_eager", fullgraph=True)
    got = compiled(torch.empty(33, 5))
    assert_bitwise_equal(got, fill(torch.empty(33, 5)))


# The op namespace -----------------------------------------------------------------------------

def test_test_hooks_are_not_user_facing_ops():
    for name in ("emulate_cuda_init_", "philox4x32_10", "transform_words", "set_cpu_isa",
                 "cpu_isa"):
        assert not hasattr(torch.ops.fusedinit, name), name
        assert hasattr(torch.ops.fusedinit_testing, name), name


def test_fake_kernels_are_named_by_the_library():
    assert torch._C._dispatch_pystub("fusedinit::init_", "")[0] == "fusedinit.ops.fake"
