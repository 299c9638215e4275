"""The Triton launch under CUDA graph capture, the parts that need no GPU: the device's table is
never first made inside a capture (a clear error before any CUDA call), and metadata of captured
launches lives in memory that is never handed out twice. The capture itself, with replays, is
tests/test_gpu.py::test_cuda_graph_capture_and_replay."""
import pytest
import torch

pytest.importorskip("triton")
from fusedinit.triton import launch  # noqa: E402


def test_staging_holds_copies_aligned_and_never_reused():
    staging = launch.CaptureStaging(4096, pin=False)
    held = []
    for n in (1, 7, 20, 3):
        host = torch.arange(n * 3, dtype=torch.int64).view(n, 3) * (n + 1)
        copy = staging.hold(host)
        assert copy.dtype == host.dtype and copy.shape == host.shape
        assert torch.equal(copy, host) and copy.data_ptr() % 16 == 0
        held.append((host, copy))
    floats = torch.tensor([0.5, -1.25, 3.0], dtype=torch.float32)
    assert torch.equal(staging.hold(floats), floats)
    spans = sorted((c.data_ptr(), c.data_ptr() + c.numel() * c.element_size()) for _, c in held)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
    for host, copy in held:  # later holds did not overwrite earlier ones
        assert torch.equal(copy, host)


def test_staging_says_when_it_is_used_up():
    staging = launch.CaptureStaging(256, pin=False)
    staging.hold(torch.zeros(24, dtype=torch.int64))  # 192 bytes
    before = staging.free_bytes
    with pytest.raises(RuntimeError, match="used up"):
        staging.hold(torch.zeros(16, dtype=torch.int64))
    assert staging.free_bytes == before  # a refused hold takes nothing


def test_first_use_inside_capture_is_refused_before_any_cuda_call(monkeypatch):
    """As if a capture were running on a device fusedinit never used: the error names the
    cause and the remedy, and comes before the table copy (without a GPU, that copy would fail
    with another error)."""
    device = torch.device("cuda", 7)
    launch.forget_device(device)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="inside CUDA graph capture.*before capturing"):
        launch.device_state(device)
    assert device not in launch._devices


def test_a_known_device_is_served_inside_capture_without_new_allocations(monkeypatch):
    """A device prepared outside capture: under capture its state is returned as it is (no new
    arena, even when the old one runs low, and no table copy)."""
    device = torch.device("cuda", 6)
    state = launch._DeviceState(torch.zeros(4), launch.CaptureStaging(64, pin=False))
    monkeypatch.setitem(launch._devices, device, state)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert launch.device_state(device) is state
    assert launch.normal_table(device) is state.table
