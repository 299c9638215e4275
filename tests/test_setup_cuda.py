"""setup_cuda.py (how setup.py finds and checks the CUDA toolkit) on fake toolkits, and setup.py's
FUSEDINIT_REQUIRE_CUDA=1 failing loudly before compiling anything."""
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if not (ROOT / "setup_cuda.py").is_file():
    pytest.skip("needs the source tree (setup_cuda.py)", allow_module_level=True)
_spec = importlib.util.spec_from_file_location("setup_cuda", ROOT / "setup_cuda.py")
setup_cuda = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("setup_cuda", setup_cuda)  # dataclasses look their module up there
_spec.loader.exec_module(setup_cuda)


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_toolkit(root: Path, release: str = "13.0", compiles: bool = True, headers: bool = True) -> Path:
    """A folder laid out like a toolkit whose nvcc reports `release` and whose compiles succeed
    (writing the -o file) or fail."""
    compile_body = ('for a; do [ "$prev" = -o ] && : > "$a"; prev=$a; done; exit 0\n' if compiles
                    else 'echo "fake nvcc: host compiler not supported" >&2; exit 1\n')
    write_script(root / "bin" / "nvcc",
                 f'case "$1" in --version) echo "Cuda compilation tools, release {release}, V{release}.1";'
                 f' exit 0;; --dryrun) echo "#$ TOP={root}/bin/.."; exit 0;; esac\n' + compile_body)
    if headers:
        (root / "include").mkdir(parents=True, exist_ok=True)
        (root / "include" / "cuda_runtime.h").write_text("")
    return root


def test_wrapper_on_path_gives_the_real_root(tmp_path):
    """The README failure: `nvcc` on PATH is a script that execs the real one; the folder above
    the wrapper has no headers, the root nvcc reports is the toolkit."""
    real = fake_toolkit(tmp_path / "cuda-13.0")
    write_script(tmp_path / "wrappers" / "bin" / "nvcc", f'exec "{real}/bin/nvcc" "$@"\n')
    env = {"PATH": f"{tmp_path / 'wrappers' / 'bin'}{os.pathsep}/usr/bin:/bin"}
    roots, source = setup_cuda.candidate_roots(env)
    assert roots[0] == str(real.resolve()) and source == "nvcc on PATH"
    toolkit, reason = setup_cuda.find_toolkit("13.0", [], env)
    assert reason == "" and toolkit.root == str(real.resolve())
    assert toolkit.nvcc == str(real.resolve() / "bin" / "nvcc")  # never the wrapper


def test_explicit_cuda_home_is_the_only_candidate(tmp_path):
    fake_toolkit(tmp_path / "good")
    broken = fake_toolkit(tmp_path / "broken", headers=False)
    env = {"PATH": f"{tmp_path / 'good' / 'bin'}", "CUDA_HOME": str(broken)}
    toolkit, reason = setup_cuda.find_toolkit("13.0", [], env)
    assert toolkit is None
    assert "cuda_runtime.h" in reason and "from CUDA_HOME" in reason


@pytest.mark.parametrize("kind, words", [
    ("no_headers", ["include/cuda_runtime.h"]),
    ("major_mismatch", ["CUDA 12.8", "CUDA 13.0", "major"]),
    ("compile_fails", ["test compile", "host compiler not supported"]),
    ("no_nvcc", ["no nvcc"]),
])
def test_unusable_toolkit_has_a_reason(tmp_path, kind, words):
    root = tmp_path / "cuda"
    if kind == "no_nvcc":
        (root / "include").mkdir(parents=True)
    else:
        fake_toolkit(root, release="12.8" if kind == "major_mismatch" else "13.0",
                     compiles=kind != "compile_fails", headers=kind != "no_headers")
    toolkit, reason = setup_cuda.check_root(str(root), "13.0", ["-O3"], {"PATH": "/usr/bin:/bin"})
    assert toolkit is None
    for word in words:
        assert word in reason, reason


def test_minor_version_difference_is_fine(tmp_path):
    root = fake_toolkit(tmp_path / "cuda", release="13.1")
    toolkit, reason = setup_cuda.check_root(str(root), "13.0", [], {"PATH": "/usr/bin:/bin"})
    assert reason == "" and toolkit.version == "13.1"


def test_no_toolkit_anywhere(tmp_path, monkeypatch):
    monkeypatch.setattr(setup_cuda.os.path, "isdir",
                        lambda p, _isdir=os.path.isdir: p != "/usr/local/cuda" and _isdir(p))
    toolkit, reason = setup_cuda.find_toolkit("13.0", [], {"PATH": str(tmp_path)})
    assert toolkit is None and "no nvcc on PATH" in reason


def test_skip_warning_says_how_to_get_the_kernels():
    text = setup_cuda.skip_warning("there is no nvcc on PATH", "13.0")
    assert "\n" not in text
    for words in ("CPU kernels only", "no nvcc on PATH", "CUDA 13.x toolkit", "CUDA_HOME",
                  "FUSEDINIT_REQUIRE_CUDA=1", "Triton"):
        assert words in text, words
    _, reason = setup_cuda.gencode_flags({"TORCH_CUDA_ARCH_LIST": "7.5"})
    text = setup_cuda.skip_warning(reason, "13.0")
    assert "name 8.0 or newer in TORCH_CUDA_ARCH_LIST" in text and "toolkit" not in text


def test_env_flag():
    assert setup_cuda.env_flag("X", {"X": "1"}) and setup_cuda.env_flag("X", {"X": "yes"})
    assert not setup_cuda.env_flag("X", {"X": "0"}) and not setup_cuda.env_flag("X", {"X": ""})
    assert not setup_cuda.env_flag("X", {})


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_real_nvcc_probe():
    """The probe compile with the build's real flags passes on this machine's toolkit."""
    toolkit, reason = setup_cuda.find_toolkit(torch.version.cuda or "13.0",
                                              ["--fmad=false", "-gencode=arch=compute_90,code=sm_90"])
    if torch.version.cuda is None or reason.startswith("the toolkit at") and "major" in reason:
        pytest.skip(f"toolkit does not match torch: {reason}")
    assert toolkit is not None, reason
    assert (Path(toolkit.root) / "include" / "cuda_runtime.h").is_file()


def run_setup(tmp_path, **env_vars):
    env = {k: v for k, v in os.environ.items() if k not in ("FUSEDINIT_NO_CUDA",)}
    env.update(env_vars)
    return subprocess.run([sys.executable, str(ROOT / "setup.py"), "-q", "build_ext",
                           "--build-temp", str(tmp_path / "t"), "--build-lib", str(tmp_path / "l")],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


@pytest.mark.parametrize("case", ["broken_toolkit", "contradiction", "old_archs_only"])
def test_require_cuda_fails_before_compiling(tmp_path, case):
    broken = fake_toolkit(tmp_path / "broken", headers=False)
    extra = {"FUSEDINIT_NO_CUDA": "1"} if case == "contradiction" else {}
    if case == "old_archs_only":  # nothing the kernels support: skipped (an error here)
        extra = {"TORCH_CUDA_ARCH_LIST": "7.0;7.5"}
    res = run_setup(tmp_path, FUSEDINIT_REQUIRE_CUDA="1", CUDA_HOME=str(broken), **extra)
    assert res.returncode != 0
    assert "FUSEDINIT_REQUIRE_CUDA=1" in res.stdout, res.stdout
    if case == "contradiction":
        assert "contradict" in res.stdout
    elif torch.version.cuda is None:
        assert "without CUDA" in res.stdout
    elif case == "old_archs_only":
        assert "names no architecture the CUDA kernels support" in res.stdout, res.stdout
    else:
        assert "cuda_runtime.h" in res.stdout
    assert not list((tmp_path / "l").rglob("*.so"))  # nothing was built


@pytest.mark.parametrize("value, expected", [
    (None, ["80:sm", "90:sm", "90:compute"]),
    ("", ["80:sm", "90:sm", "90:compute"]),
    ("9.0", ["90:sm"]),
    ("9.0+PTX", ["90:sm", "90:compute"]),
    ("8.0;9.0", ["80:sm", "90:sm"]),
    ("8.6 9.0+PTX", ["86:sm", "90:sm", "90:compute"]),
])
def test_gencode_flags_follow_torch_cuda_arch_list(value, expected):
    env = {} if value is None else {"TORCH_CUDA_ARCH_LIST": value}
    flags, note = setup_cuda.gencode_flags(env)
    got = [f"{f.split('compute_')[1].split(',')[0]}:{f.rsplit('code=', 1)[1].split('_')[0]}"
           for f in flags]
    assert got == expected and note is None


def test_gencode_flags_drop_old_archs_and_refuse_nonsense():
    flags, note = setup_cuda.gencode_flags({"TORCH_CUDA_ARCH_LIST": "7.0;7.5;9.0"})
    assert flags == ["-gencode=arch=compute_90,code=sm_90"]
    assert "7.0, 7.5 dropped" in note and "Triton" in note
    flags, reason = setup_cuda.gencode_flags({"TORCH_CUDA_ARCH_LIST": "7.0"})
    assert flags == [] and "names no architecture" in reason and "8.0 or newer" in reason
    with pytest.raises(ValueError, match="TORCH_CUDA_ARCH_LIST: 'Hopper' is not"):
        setup_cuda.gencode_flags({"TORCH_CUDA_ARCH_LIST": "Hopper"})
