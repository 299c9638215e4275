"""The contract header compiles under nvcc for Hopper with contraction off; its device code has
no special-function (MUFU) approximation, and its only fused multiply-adds are the contract's
own (inline-asm fma.rn.f32, none contracted by the compiler). Skipped where nvcc is absent."""
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
def test_header_compiles_for_sm90_with_only_the_contracts_fma(tmp_path):
    from ptx_exactness import inexact_ops, split_contract_fma

    src = tmp_path / "probe.cu"
    src.write_text(KERNEL)
    ptx = tmp_path / "probe.ptx"
    subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "--fmad=false", f"-I{ROOT / 'csrc'}",
                    "-ptx", str(src), "-o", str(ptx)], check=True, capture_output=True, timeout=300)
    text = ptx.read_text()
    assert inexact_ops(text) == []
    # normal 7 (Horner 6 + the affine step), uniform 1, truncated normal 8 (quantile 6,
    # probability and affine step); a compiler may merge identical ones, never add any.
    assert 0 < split_contract_fma(text)[0] <= 16
    obj = tmp_path / "probe.o"
    subprocess.run(["nvcc", "-std=c++17", "-arch=sm_90", "--fmad=false", f"-I{ROOT / 'csrc'}",
                    "-c", str(src), "-o", str(obj)], check=True, capture_output=True, timeout=300)
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump to read the SASS")
    sass = subprocess.run([tool, "-sass", str(obj)], check=True, capture_output=True,
                          text=True).stdout
    assert "FFMA" in sass and "IMAD.WIDE.U32" in sass
    assert "MUFU" not in sass


@pytest.mark.skipif(shutil.which("nvcc") is None or not (ROOT / "csrc").exists(),
                    reason="needs nvcc and the source tree")
@pytest.mark.parametrize("capacity", [1, 16, 128])
def test_each_kernel_file_compiles_its_own_capacity_alone(tmp_path, capacity):
    """init_kernel_<N>.cu holds the kernel for N descriptors and no other: a header that names
    every capacity's instantiation (a run-time switch, say) made each file compile all three,
    three times the device code of the build. -G: unoptimized, the quickest device compile."""
    ptx = tmp_path / f"k{capacity}.ptx"
    subprocess.run(["nvcc", "-std=c++17", "-arch=compute_90", "-G", f"-I{ROOT / 'csrc'}", "-ptx",
                    str(ROOT / f"csrc/cuda/init_kernel_{capacity}.cu"), "-o", str(ptx)],
                   check=True, capture_output=True, timeout=600)
    entries = [line.split()[-1] for line in ptx.read_text().splitlines() if ".entry" in line]
    assert len(entries) == 1, entries
    assert f"ILi{capacity}E" in entries[0], entries  # init_kernel<N>'s mangled name
