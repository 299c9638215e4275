"""benchmarks/sass_report.py runs without a GPU: both kernels compile for sm_90, their PTX has
no approximate / flush-to-zero / fused float op, and the JSON has the documented shape."""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytest.importorskip("triton", reason="the report disassembles with Triton's nvdisasm")


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_report_json():
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/sass_report.py"), "--json"],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert set(report) == {"cuda", "triton", "cuda_smem_wavefronts"}
    for name in ("cuda", "triton"):
        assert set(report[name]) == {"float32", "bfloat16"}
        # Philox alone is ~10 instructions per element: anything far below is a parsing bug.
        assert all(8 < n < 200 for n in report[name].values()), report
    # Four 8-byte loads a value, each at least 2 phases per 32 values: >= 8 / 32.
    assert all(0.25 <= n < 0.5 for n in report["cuda_smem_wavefronts"].values()), report


def test_report_json_triton_only():
    """--only triton compiles no CUDA (no nvcc needed): the JSON has the Triton key alone."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/sass_report.py"), "--json",
                          "--only", "triton"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert set(report) == {"triton"} and set(report["triton"]) == {"float32", "bfloat16"}
    assert all(8 < n < 200 for n in report["triton"].values()), report


def test_wavefront_model():
    """The shared-memory model on layouts whose cost is known by hand."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    import sass_report

    rows = sass_report.table_rows(np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 5, 2**30],
                                           dtype=np.uint64))
    assert rows.tolist() == [0, 3, 63, 0, 63, 6, 62]
    # One 4-byte load of the same word for every lane: one wavefront per 32 values.
    assert sass_report.table_wavefronts([(0, 0, 4)], warps=50) == 1 / 32
    # A 16-byte load is served in 4 phases of 8 lanes, even when every lane reads one row.
    assert sass_report.table_wavefronts([(0, 0, 16)], warps=50) == 4 / 32
    # The row-major 32-byte layout conflicts (rows r and r + 4 share banks); two 16-byte
    # column arrays (rows r and r + 8 share banks, quarter-warp phases) do less, and the
    # kernel's 8-byte column pairs (16 rows bank-free, half-warp phases) less still.
    quads = [(0, 16, 16), (1024, 16, 16)]
    assert (sass_report.table_wavefronts(sass_report.TABLE_LOADS)
            < sass_report.table_wavefronts(quads)
            < sass_report.table_wavefronts(sass_report.TABLE_LOADS_ROW_MAJOR))
