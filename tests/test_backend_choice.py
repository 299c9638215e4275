"""Which backend a CUDA tensor gets on a GPU the CUDA kernels were not built for (older than
sm_80): Triton when it works, a clear error naming the GPU when nothing does. The GPU is
simulated (capability and name patched), so this runs without one."""
import pytest
import torch

from fusedinit.ops import api, cuda_arch, op

CUDA0 = torch.device("cuda", 0)


@pytest.fixture
def turing(monkeypatch):
    """A cuda:0 of compute capability 7.5 in a build that has the CUDA kernels."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(op, "has_kernel", lambda device_type: True)


def test_old_gpu_falls_back_to_triton(turing, monkeypatch):
    monkeypatch.setattr(api, "_triton_error", lambda device: None)
    assert api._choose(CUDA0, None) == "triton"


def test_old_gpu_without_triton_is_a_clear_error(turing, monkeypatch):
    monkeypatch.setattr(api, "_triton_error", lambda device: "triton is not importable (x)")
    with pytest.raises(RuntimeError, match=r"Tesla T4.*capability 7\.5.*8\.0.*Triton"):
        api._choose(CUDA0, None)


def test_old_gpu_explicit_cuda_backend_is_a_clear_error(turing):
    with pytest.raises(RuntimeError, match=r"backend='cuda'.*capability 7\.5.*backend='triton'"):
        api._choose(CUDA0, "cuda")


@pytest.mark.parametrize("capability", [(8, 0), (8, 6), (9, 0), (10, 0), (12, 0)])
def test_sm80_and_newer_get_the_cuda_kernel(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(op, "has_kernel", lambda device_type: True)
    assert cuda_arch.cuda_kernels_run_on(CUDA0)
    assert api._choose(CUDA0, None) == "op"
    assert api._choose(CUDA0, "cuda") == "op"
