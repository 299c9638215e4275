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
    from fusedinit.ptx_exactness import inexact_ops, split_contract_fma
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
