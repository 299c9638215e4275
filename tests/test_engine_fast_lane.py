"""The engine's fast lane: an init write to one of the module's own tensor objects is queued
without asking for its memory through the general path. It must do exactly what the general
path does (same values, same refusals), notice a tensor whose memory was replaced, and add
no object per tensor that the garbage collector keeps (a recording of 10^5 parameters would
otherwise pay for full collections)."""
import dataclasses
import gc

import pytest
import torch
from torch import nn

import fusedinit
from conftest import assert_bitwise_equal
from fusedinit import param_stream
from fusedinit.ops.specs import Normal, TruncNormal, Uniform, on_stream

SEED = 99


def _module(n: int = 6) -> nn.Module:
    m = nn.Module()
    m.ws = nn.ParameterList(nn.Parameter(torch.empty(3, 5)) for _ in range(n))
    m.register_buffer("count", torch.zeros((), dtype=torch.int64))
    return m


def _init(m: nn.Module, through) -> None:
    for i, w in enumerate(m.ws):
        t = through(w)
        if i % 3 == 0:
            nn.init.normal_(t, mean=0.5, std=2.0)
        elif i % 3 == 1:
            nn.init.uniform_(t, -0.25, 0.75)
        else:
            nn.init.constant_(t, 1.5)
    m.count.fill_(7)


def test_own_object_alias_and_flat_view_write_the_same_values(op_calls):
    """The parameter object (fast lane), its `.data` alias and a flat view of it (general
    path) are the same write: the contract's values for the parameter's name."""
    results = []
    for through in (lambda w: w, lambda w: w.data, lambda w: w.data.view(-1)):
        m = _module()
        op_calls.clear()
        with fusedinit.fuse(m, seed=SEED):
            _init(m, through)
        assert op_calls == [6]
        results.append({k: v.clone() for k, v in m.state_dict().items()})
    for other in results[1:]:
        for name in results[0]:
            assert_bitwise_equal(other[name], results[0][name])
    expected = fusedinit.normal_(torch.empty(3, 5), 0.5, 2.0, seed=SEED,
                                 stream=param_stream("ws.0"))
    assert_bitwise_equal(results[0]["ws.0"], expected)
    assert int(results[0]["count"]) == 7


def test_a_draw_on_an_integer_buffer_is_not_queued():
    """As the general path: only constants are queued for integer tensors; a draw runs as
    written (torch refuses it)."""
    m = _module(1)
    with pytest.raises(RuntimeError):
        with fusedinit.fuse(m, seed=SEED):
            m.count.normal_()


def test_memory_replaced_after_the_write_was_queued_is_not_overwritten():
    """`.data = loaded` after a queued write: the loaded values stay (stock wrote the old
    memory, which the module no longer holds)."""
    m = _module(2)
    loaded = torch.full((3, 5), 7.0)
    with fusedinit.fuse(m, seed=SEED):
        nn.init.normal_(m.ws[0])
        nn.init.ones_(m.ws[1])
        m.ws[0].data = loaded
    assert_bitwise_equal(m.ws[0].detach(), torch.full((3, 5), 7.0))
    assert_bitwise_equal(m.ws[1].detach(), torch.ones(3, 5))


def test_memory_replaced_before_the_write_runs_as_written():
    """`.data = other` before the write: the object no longer holds the recorded memory, so
    the write is not queued under the parameter's name; it runs as written on the new memory."""
    m = _module(1)
    with fusedinit.fuse(m, seed=SEED):
        m.ws[0].data = torch.zeros(2, 2)
        nn.init.ones_(m.ws[0])
    assert_bitwise_equal(m.ws[0].detach(), torch.ones(2, 2))


def test_swap_tensors_after_the_write_was_queued():
    m = _module(1)
    other = nn.Parameter(torch.full((3, 5), 3.0))
    with fusedinit.fuse(m, seed=SEED):
        nn.init.normal_(m.ws[0])
        torch.utils.swap_tensors(m.ws[0], other)
    assert_bitwise_equal(m.ws[0].detach(), torch.full((3, 5), 3.0))


def test_a_parameter_of_another_module_is_not_queued():
    m, stranger = _module(1), nn.Parameter(torch.zeros(4))
    with fusedinit.fuse(m, seed=SEED):
        nn.init.ones_(stranger)
    assert_bitwise_equal(stranger.detach(), torch.ones(4))  # ran as written, at once


def _tracked_after_collection() -> int:
    """Objects the collector tracks, but the Python storage objects torch keeps alive with a
    storage once it has been asked for (one per storage, for its lifetime: not ours)."""
    gc.collect()
    return sum(type(o) is not torch.UntypedStorage for o in gc.get_objects())


def test_a_recording_keeps_no_tracked_object_per_tensor():
    """Opening a recording adds no object per tensor that outlives a collection (the memory
    keys are tuples of untracked values); a queued write keeps two (its pending entry and the
    alias that keeps its memory alive)."""
    n = 3000
    m = _module(n)
    ws = list(m.ws)
    warm = _module(1)
    with fusedinit.fuse(warm, seed=SEED):  # lazy imports and first-call caches
        nn.init.ones_(warm.ws[0])
    baseline = _tracked_after_collection()
    with fusedinit.fuse(m, seed=SEED):
        opened = _tracked_after_collection()
        for w in ws:
            nn.init.ones_(w)
        queued = _tracked_after_collection()
    assert opened - baseline < 100, opened - baseline
    assert queued - opened < 2 * n + 100, queued - opened
    assert all(bool((w == 1).all()) for w in ws)


@pytest.mark.parametrize("spec", [Normal(0.5, 2.0), Normal(0.0, 1.0, padding_idx=2),
                                  Uniform(-1.0, 3.0), TruncNormal(0.0, 1.0, -0.5, 2.0)])
def test_on_stream_is_dataclasses_replace(spec):
    fast, slow = on_stream(spec, 2**64 - 1), dataclasses.replace(spec, stream=2**64 - 1)
    assert fast == slow and type(fast) is type(slow)
    assert fast.op_params == slow.op_params and fast.largest_value == slow.largest_value
    assert spec.stream == 0  # the original is untouched
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="stream"):
            on_stream(spec, bad)


def test_an_in_place_view_change_sends_the_write_to_the_general_path():
    """`w.t_()` since the recording opened: the object no longer has the recorded view, so its
    write is not the recorded parameter's; it runs as written (torch's generator), exactly as
    without fuse."""
    def build():
        m = nn.Module()
        m.w = nn.Parameter(torch.empty(4, 4))
        return m

    stock, fused = build(), build()
    torch.manual_seed(5)
    with torch.no_grad():
        stock.w.t_()
    nn.init.normal_(stock.w)
    torch.manual_seed(5)
    with fusedinit.fuse(fused, seed=SEED):
        with torch.no_grad():
            fused.w.t_()
        nn.init.normal_(fused.w)
    assert_bitwise_equal(fused.w.detach(), stock.w.detach())


def test_a_queued_write_never_lands_on_memory_loaded_later():
    """The queue keeps the memory it queued a write for alive: a storage freed and reused for
    values loaded later (same address) must not receive the write."""
    for _ in range(10):
        m = _module(1)
        with fusedinit.fuse(m, seed=SEED):
            nn.init.normal_(m.ws[0])
            m.ws[0].data = torch.empty(0)
            m.ws[0].data = torch.ones(3, 5)
        assert_bitwise_equal(m.ws[0].detach(), torch.ones(3, 5))


@pytest.mark.parametrize("change", [lambda w: w.data.t(), lambda w: w.data[1:3],
                                    lambda w: w.data[:2]])
def test_a_view_changed_through_data_keeps_each_path_equal(change):
    """`.data = .data.t()` / `[1:3]` / `[:2]` keep the storage: the write queued
    before goes to the memory it was queued for, and a write after runs as the general path
    does (the object no longer shows the recorded view)."""
    results = []
    for through in (lambda w: w, lambda w: w.data):
        m = _module(1)
        torch.manual_seed(3)
        with fusedinit.fuse(m, seed=SEED):
            nn.init.normal_(through(m.ws[0]))
            m.ws[0].data = change(m.ws[0])
        results.append(m.ws[0].detach().clone())
    assert_bitwise_equal(results[0], results[1])
    expected = fusedinit.normal_(torch.empty(3, 5), seed=SEED, stream=param_stream("ws.0"))
    assert_bitwise_equal(results[0], change(expected))


def test_a_write_after_data_is_replaced_with_the_same_shape_runs_as_written():
    """`.data = loaded` (same shape) then a write: not the recorded memory, so it runs as
    written, and a read inside the block sees what the write wrote."""
    m = _module(1)
    torch.manual_seed(4)
    with fusedinit.fuse(m, seed=SEED):
        m.ws[0].data = torch.ones(3, 5)
        nn.init.normal_(m.ws[0])
        seen = m.ws[0].detach().clone()
    assert_bitwise_equal(m.ws[0].detach(), seen)
    torch.manual_seed(4)
    assert_bitwise_equal(seen, torch.empty(3, 5).normal_())


def test_a_float_buffer_viewed_as_int_after_its_write():
    m = nn.Module()
    m.register_buffer("b", torch.empty(8))
    with fusedinit.fuse(m, seed=SEED):
        m.b.normal_()
        m.b.data = m.b.data.view(torch.int32)
    expected = fusedinit.normal_(torch.empty(8), seed=SEED, stream=param_stream("b"))
    assert_bitwise_equal(m.b, expected.view(torch.int32))
