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
    gpu = text.index("tests/test_gpu.py tests/test_triton_capture.py")
    assert gpu < text.index("gpu_bench.py --check") < text.index("--ignore=tests/test_gpu.py")
    assert not re.search(r"pytest[^\n]*\s-x\b", text), "a failure must not stop the GPU tests"
    assert "PYTHONUNBUFFERED=1" in text and "--no-index" in text
    # A time limit must let pytest print its summary (SIGINT), not kill it (SIGTERM).
    assert "timeout -s INT" in text and not re.search(r"\btimeout \"", text)


HEADERS = ["device", "ninja", "build", "GPU tests", "cross-check and benchmark",
           "ncu: shared-memory wavefronts and instructions of the CUDA kernel, 2^28 values",
           "CPU kernels: every ISA variant this CPU runs, natively",
           "the rest of the tests, in the time left", "gpu_check exit status 0"]


def test_gpu_check_runs_end_to_end_without_a_gpu(tmp_path):
    """Every step's header, in order, with the GPU steps skipped; pip and pytest are stood in
    for by a wrapper (the build and the suites run elsewhere in CI), the inline Python snippets
    run for real against the installed fusedinit."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n"
                    'if [ "$1" = -m ] && { [ "$2" = pytest ] || [ "$2" = pip ]; }; then\n'
                    '  echo "would run: $*"; exit 0\nfi\n'
                    f'exec "{sys.executable}" "$@"\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=str(fake), GPU_CHECK_DRY="1", OUT=str(out),
               PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    headers = re.findall(r"^=== \[\d+ s\] (.*)$", run.stdout, re.M)
    assert headers == HEADERS, run.stdout[-3000:]
    assert run.stdout.count("skipped: no GPU") >= 3
    assert "CUDA_KERNELS" in run.stdout and "CUDA_SKIPPED" in run.stdout
    assert "would run: -m pip install" in run.stdout
    assert (out / "gpu_check.log").read_text().count("=== [") == len(HEADERS)


def test_gpu_bench_keeps_what_it_measured_when_interrupted(tmp_path, monkeypatch):
    """SIGINT (the script's time limit) in the middle of the timings: the JSON and Markdown
    files hold every check and timing done so far, and the exit code says it was cut."""
    import gpu_bench

    calls = []

    def timer(fn):
        calls.append(1)
        if len(calls) > 7:  # the third row's timings
            raise KeyboardInterrupt
        return gpu_bench._cpu_timer(fn, reps=1)

    setup = gpu_bench.dry_run_setup()
    setup.timer = timer
    monkeypatch.setattr(gpu_bench, "dry_run_setup", lambda: setup)
    out_json, out_md = tmp_path / "bench.json", tmp_path / "rows.md"
    rc = gpu_bench.main(["--dry-run", "--json", str(out_json), "--markdown", str(out_md)])
    assert rc == 130
    import json
    result = json.loads(out_json.read_text())
    per_row = 2 + len(setup.backends)
    assert not result["finished"] and len(result["rows"]) == 7 // per_row
    assert result["checks"] > 0 and result["failures"] == []
    lines = out_md.read_text().splitlines()
    assert len(lines) == 2 + len(result["rows"]) and lines[0].startswith("| dtype")


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


def test_gpu_bench_refuses_an_output_path_it_cannot_write(tmp_path):
    """Checked before anything runs: a typo must not cost the GPU minutes it took to measure."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_bench.py"), "--dry-run",
                          "--markdown", str(tmp_path / "missing" / "rows.md")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--markdown: folder of" in run.stderr, run.stderr[-2000:]
    assert "cross-check" not in run.stdout
