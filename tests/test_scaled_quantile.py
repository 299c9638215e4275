"""The CUDA kernel evaluates the normal from a scaled copy of the table (thread_body.h,
SharedTable): the same bits as the contract's standard_normal. tools/check_scaled_quantile.cpp
compiles that host/device code on the host and compares; here over a sparse sample of words
(run it without an argument for all 2^32)."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("clang++")


@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
def test_scaled_table_normal_is_the_contract(tmp_path):
    exe = tmp_path / "check"
    subprocess.run([CXX, "-std=c++17", "-O2", "-ffp-contract=off", f"-I{ROOT / 'csrc'}",
                    str(ROOT / "tools/check_scaled_quantile.cpp"), "-o", str(exe)], check=True)
    run = subprocess.run([str(exe), "1009"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout[-2000:]
