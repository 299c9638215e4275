"""Finding and checking the CUDA toolkit for setup.py.

torch.utils.cpp_extension guesses the toolkit root as the folder above the first `nvcc` on PATH,
which is wrong whenever that `nvcc` is a wrapper script or a symlink farm (the headers are not
there, and the CUDA compile dies late with `cuda_runtime.h: No such file or directory`). Here the
root is found the way nvcc itself finds it, and the toolkit is checked - headers, major version
equal to torch's CUDA, and a probe compile of a tiny kernel with the real flags - before the build
commits to it. Any failure is a reason string: setup.py then builds the CPU kernels alone.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

PROBE_SOURCE = """#include <cuda_runtime.h>
__global__ void fusedinit_probe(float* out) { out[threadIdx.x] = 1.0f; }
"""


@dataclass(frozen=True)
class Toolkit:
    root: str
    nvcc: str
    version: str  # "13.0"


# sm_80 and sm_90 machine code plus sm_90 PTX (JIT-compiled by newer drivers).
DEFAULT_ARCHS = ("8.0", "9.0+PTX")
MIN_ARCH = (8, 0)  # the kernels need sm_80; older GPUs are served by the Triton backend


def gencode_flags(env=None) -> tuple[list[str], str | None]:
    """nvcc's -gencode flags for the CUDA kernels, and a note when the list was changed.

    TORCH_CUDA_ARCH_LIST is read as torch's own extensions read it ("9.0", "8.0;9.0+PTX",
    "8.6 9.0"; names such as "Hopper" are not understood), so a build for one GPU compiles one
    architecture (a third of the default's device code). Unset or empty: DEFAULT_ARCHS.
    Architectures below 8.0 are dropped with a note; a list with none left gives no flags and
    the reason (setup.py then builds the CPU kernels alone, as for a missing toolkit); an entry
    that is not a version is an error naming the variable."""
    env = os.environ if env is None else env
    text = env.get("TORCH_CUDA_ARCH_LIST", "").strip()
    entries = text.replace(";", " ").split() if text else list(DEFAULT_ARCHS)
    flags, dropped = [], []
    for entry in entries:
        name, ptx = (entry[:-4], True) if entry.endswith("+PTX") else (entry, False)
        parts = name.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"TORCH_CUDA_ARCH_LIST: {entry!r} is not an architecture such as "
                             "'9.0' or '9.0+PTX'")
        major, minor = int(parts[0]), int(parts[1])
        if (major, minor) < MIN_ARCH:
            dropped.append(entry)
            continue
        arch = f"{major}{minor}"
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{arch},code=compute_{arch}")
    if not flags:  # nothing to build: the caller skips the CUDA kernels and says why
        return [], (f"TORCH_CUDA_ARCH_LIST={text!r} names no architecture the CUDA kernels "
                    "support (8.0 or newer)")
    note = (f"TORCH_CUDA_ARCH_LIST: {', '.join(dropped)} dropped (the CUDA kernels need 8.0 or "
            "newer; the Triton backend serves older GPUs)") if dropped else None
    return flags, note


def env_flag(name: str, env=None) -> bool:
    """An on/off environment switch: set and not empty or "0"."""
    value = (os.environ if env is None else env).get(name, "")
    return value.strip() not in ("", "0")


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)


def nvcc_reported_root(nvcc: str) -> str | None:
    """The root nvcc itself uses (`TOP=` of a dry run): right even when `nvcc` is a wrapper."""
    try:
        out = _run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull], 60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        match = re.match(r"#\$ TOP=(.+)$", line.strip())
        if match:
            return os.path.realpath(match.group(1).strip())
    return None


def candidate_roots(env=None) -> tuple[list[str], str]:
    """Toolkit roots to try, best first, and where they came from. An explicit CUDA_HOME or
    CUDA_PATH is the only candidate: a user who named a toolkit must not silently get another."""
    env = os.environ if env is None else env
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if env.get(name):
            return [env[name]], name
    roots = []
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    if nvcc:
        reported = nvcc_reported_root(nvcc)
        if reported:
            roots.append(reported)
        roots.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    if os.path.isdir("/usr/local/cuda"):
        roots.append("/usr/local/cuda")
    unique = []
    for root in map(os.path.realpath, roots):
        if root not in unique:
            unique.append(root)
    return unique, "nvcc on PATH" if nvcc else "the default location"


def nvcc_version(nvcc: str) -> str | None:
    try:
        out = _run([nvcc, "--version"], 60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", out)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def probe_compile(nvcc: str, flags: list[str], env=None) -> str | None:
    """Compile a tiny kernel with the build's own nvcc flags; None on success, else why not."""
    env = os.environ if env is None else env
    cmd = [nvcc]
    if env.get("CC"):  # torch's build passes CC to nvcc as its host compiler too
        cmd += ["-ccbin", env["CC"]]
    with tempfile.TemporaryDirectory(prefix="fusedinit-probe-") as tmp:
        src = os.path.join(tmp, "probe.cu")
        with open(src, "w") as f:
            f.write(PROBE_SOURCE)
        try:
            res = _run(cmd + flags + ["-c", src, "-o", os.path.join(tmp, "probe.o")])
        except (OSError, subprocess.SubprocessError) as exc:
            return f"running {nvcc} failed: {exc}"
    if res.returncode != 0:
        lines = [ln for ln in res.stdout.strip().splitlines() if ln.strip()]
        return f"a test compile with {nvcc} failed: {lines[-1] if lines else res.returncode}"
    return None


def check_root(root: str, torch_cuda: str, flags: list[str], env=None) -> tuple[Toolkit | None, str]:
    """The toolkit at root if it can build the kernels for this torch, else (None, reason)."""
    nvcc = os.path.join(root, "bin", "nvcc")
    if not (os.path.isfile(nvcc) and os.access(nvcc, os.X_OK)):
        return None, f"no nvcc at {nvcc}"
    if not os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
        return None, f"the toolkit at {root} has no include/cuda_runtime.h"
    version = nvcc_version(nvcc)
    if version is None:
        return None, f"{nvcc} --version gave no release number"
    if version.split(".")[0] != torch_cuda.split(".")[0]:
        return None, (f"the toolkit at {root} is CUDA {version} but torch was built with CUDA "
                      f"{torch_cuda} (the major versions must match)")
    failure = probe_compile(nvcc, flags, env)
    if failure:
        return None, failure
    root = os.path.realpath(root)
    return Toolkit(root, os.path.join(root, "bin", "nvcc"), version), ""


def find_toolkit(torch_cuda: str, flags: list[str], env=None) -> tuple[Toolkit | None, str]:
    """The first usable toolkit, or (None, why the best candidate is not usable)."""
    roots, source = candidate_roots(env)
    if not roots:
        return None, "there is no nvcc on PATH, no CUDA_HOME and no /usr/local/cuda"
    first_reason = ""
    for root in roots:
        toolkit, reason = check_root(root, torch_cuda, flags, env)
        if toolkit:
            return toolkit, ""
        first_reason = first_reason or reason
    return None, f"{first_reason} (toolkit location from {source})"


def skip_warning(reason: str, torch_cuda: str | None) -> str:
    """The one message a CPU-only fallback build prints."""
    major = torch_cuda.split(".")[0] if torch_cuda else "?"
    remedy = ("To build them, name 8.0 or newer in TORCH_CUDA_ARCH_LIST (or unset it) and "
              "reinstall" if reason.startswith("TORCH_CUDA_ARCH_LIST") else
              f"To build them, install the CUDA {major}.x toolkit (nvcc and headers), set "
              "CUDA_HOME to its root and reinstall")
    return (f"fusedinit: building the CPU kernels only; the CUDA kernels are skipped because {reason}. "
            f"{remedy}; FUSEDINIT_REQUIRE_CUDA=1 turns this into an error. "
            "CUDA tensors are still initialized by the Triton backend.")
