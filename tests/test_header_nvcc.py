"""The contract header compiles under nvcc for Hopper with contraction off, and its device code
uses no FMA and no special-function (MUFU) approximation. Skipped where nvcc is absent."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNEL = r"""
#include "fusedinit/rng_math.h"
__global__ void probe(float* out, unsigned long long seed, unsigned long long stream, long long n) {
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i >= n) return;
  unsigned w = fusedinit::stream_word(seed, stream, i);
  out[i] = fusedinit::normal_value(w, 0.f, 1.f) + fusedinit::uniform_value(w, -1.f, 1.f) +
           fusedinit::trunc_normal_value(w, 0.f, 1.f, -2.f, 2.f, 0.0227f, 0.9772f);
}
"""


def _cuobjdump():
    try:
        import triton

        path = pathlib.Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
        return str(path) if path.exists() else shutil.which("cuobjdump")
    except ImportError:
        return shutil.which("cuobjdump")


@pytest.mark.skipif(shutil.which("nvcc") is None or not (ROOT / "csrc").exists(),
                    reason="needs nvcc and the source tree")
def test_header_compiles_for_sm90_without_fma(tmp_path):
    src = tmp_path / "probe.cu"
    src.write_text(KERNEL)
    obj = tmp_path / "probe.o"
    subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "--fmad=false", f"-I{ROOT / 'csrc'}",
                    "-c", str(src), "-o", str(obj)], check=True, capture_output=True, timeout=300)
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump to read the SASS")
    sass = subprocess.run([tool, "-sass", str(obj)], check=True, capture_output=True,
                          text=True).stdout
    assert "FMUL" in sass and "IMAD.WIDE.U32" in sass
    assert "FFMA" not in sass and "MUFU" not in sass
