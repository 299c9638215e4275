"""The Triton backend without a GPU: its kernel run by Triton's interpreter against the
reference (in a subprocess: the interpreter is picked when a kernel is decorated), and the
kernel compiled ahead of time for Hopper, every dtype and layout."""
import os
import re
import pathlib
import subprocess
import sys

import pytest
import torch

import fusedinit

triton = pytest.importorskip("triton", reason="the Triton backend needs the triton package")
HERE = pathlib.Path(__file__).resolve().parent
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def test_interpreted_kernel_equals_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(HERE / "interpreted_triton.py")],
                         cwd=HERE, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["aligned", "contiguous", "strided", "index-unaligned",
                                    "runs"])
def test_compiles_for_sm90(dtype, layout):
    from fusedinit.triton.aot import compile_kernel

    if layout == "index-unaligned":  # shards whose global index offset is not a unit multiple
        kernel = compile_kernel(dtype, arch=90, layout="contiguous", index_aligned=False,
                                has_runs=True)
    elif layout == "runs":  # shards placed as runs a stride apart, unit-aligned
        kernel = compile_kernel(dtype, arch=90, layout="aligned", has_runs=True)
    else:
        kernel = compile_kernel(dtype, arch=90, layout=layout)
    ptx = kernel.asm["ptx"]
    assert ".target sm_90" in ptx
    # Bit exactness on the GPU: no approximate, flush-to-zero or contracted float op; the only
    # fma are the contract's (inline asm), 7 per normal or truncated normal value at least.
    from ptx_exactness import inexact_ops, split_contract_fma
    assert inexact_ops(ptx) == [], f"inexact ops in the PTX of {dtype} {layout}"
    assert split_contract_fma(ptx)[0] >= 7
    if layout == "aligned":
        assert re.search(r"st\.global\.v(4\.b32|2\.b64)", ptx), "16-byte stores"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cpu_tensor_needs_the_interpreter():
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("interpreter on")
    t = torch.zeros(8)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        fusedinit.normal_(t, seed=1, backend="triton")
    assert torch.equal(t, torch.zeros(8))


def test_backend_listing():
    assert "triton" in fusedinit.available_backends()


def test_launch_runs_on_the_tensors_device(monkeypatch):
    """Tensors on cuda:1 while cuda:0 is current: the launch happens under cuda:1 (Triton
    launches on the current device and its current stream). No GPU needed: the device guard
    and the launch are recorded."""
    from fusedinit.triton import launch

    class Tensor:
        device = torch.device("cuda", 1)

    entered = []

    class Guard:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            entered.append(self.device)

        def __exit__(self, *exc):
            entered.append(None)

    monkeypatch.setattr(torch.cuda, "device", Guard)
    monkeypatch.setattr(launch, "_init", lambda *args: entered.append("launch"))
    launch.init_([Tensor()], [0], [0.0] * 6, [0], [-1], 1)
    assert entered == [torch.device("cuda", 1), "launch", None]


@pytest.mark.parametrize("dtype,multiple", [(torch.float32, 4), (torch.float64, 2),
                                            (torch.bfloat16, 8), (torch.float16, 8)])
def test_aligned_start_claims_16_bytes(dtype, multiple):
    """An aligned tensor's element offset from the launch's base is a multiple of 16 bytes,
    i.e. 16 / element size elements (not 16 elements)."""
    from fusedinit.triton.aot import compile_kernel

    ttir = compile_kernel(dtype, arch=90, layout="aligned").asm["ttir"]
    claims = re.findall(r"%start\S* = tt\.load .*tt\.divisibility = dense<(\d+)>", ttir)
    # One claim per copy of the block's code (init_kernel has two: carry-free and not).
    assert claims and set(claims) == {str(multiple)}, claims


def test_coefficient_table_built_at_import():
    """The host copy exists before any launch (a first build inside CUDA graph capture would
    put a synchronizing copy into the capture)."""
    from fusedinit.triton import kernel as K, launch

    table = launch._TABLE_ROWS
    assert table.dtype == torch.int64 and table.numel() == (K.TABLE_SKIP + 64) * 4
    assert not table[:K.TABLE_SKIP * 4].any()
    assert torch.equal(launch.normal_table(torch.device("cpu")), table)
