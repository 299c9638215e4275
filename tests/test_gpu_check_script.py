"""The GPU check must run to its end on a GPU machine: its shell script parses, and every step
of benchmarks/gpu_bench.py runs (--dry-run: tiny sizes on CPU tensors, the CPU kernel, the
reference and the Triton interpreter standing in for the GPU backends)."""
import os
import re
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_gpu_check_script_parses():
    run = subprocess.run(["bash", "-n", str(ROOT / "benchmarks/gpu_check.sh")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_gpu_check_runs_gpu_tests_first_and_without_x():
    text = (ROOT / "benchmarks/gpu_check.sh").read_text()
    gpu = text.index("tests/test_gpu.py ||")
    assert gpu < text.index("gpu_bench.py") < text.index("--ignore=tests/test_gpu.py")
    assert not re.search(r"pytest[^\n]*\s-x\b", text), "a failure must not stop the GPU tests"
    assert "PYTHONUNBUFFERED=1" in text and "--no-index" in text


@pytest.mark.parametrize("interpret", ["0", "1"])
def test_gpu_bench_dry_run(tmp_path, interpret):
    if interpret == "1":
        pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET=interpret,
               PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_bench.py"), "--dry-run",
                          "--json", str(out)], capture_output=True, text=True, env=env,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "MISMATCH" not in run.stdout and "cross-check: 0 mismatches" in run.stdout
    assert "normal+padding" in run.stdout  # the step that once crashed before any timing
    import json
    result = json.loads(out.read_text())
    assert ("triton" in result["backends"]) == (interpret == "1")
    assert {r["dtype"] for r in result["rows"]} == {"float32", "bfloat16"}


def test_every_checked_shape_holds_the_padding_row():
    """The shapes the GPU run checks (not only the dry run's): a padding row out of range
    crashed the first GPU run before any timing."""
    import gpu_bench

    setup = gpu_bench.Setup("cuda", ["cuda"], (1025, 1023), [24, 26, 28, 30], [24], None)
    gpu_bench.check_shapes(setup)
    with pytest.raises(ValueError, match="pads row 3"):
        gpu_bench.check_shapes(gpu_bench.Setup("cuda", ["cuda"], (1, (1 << 20) + 3), [24], [24],
                                               None))
