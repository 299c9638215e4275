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
    assert set(report) == {"cuda", "triton"}
    for kernel in report.values():
        assert set(kernel) == {"float32", "bfloat16"}
        # Philox alone is ~10 instructions per element: anything far below is a parsing bug.
        assert all(8 < n < 200 for n in kernel.values()), report
