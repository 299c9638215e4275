"""The AVX-512 CPU kernels on CPUs without AVX-512: tests/simde/avx512_simde.cpp compiles
csrc/cpu/kernels_avx512.cpp itself on SIMDe's portable intrinsics into a small test library
(one JIT compile with torch.utils.cpp_extension, cached under build/), whose variant,
"avx512-simde", joins the extension's table so that fusedinit.testing.set_cpu_isa selects it
like the native ones and every test that loops over conftest.isas() checks it too. The package
build never sees any of this."""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import pathlib
import platform
import sys
import time
from typing import List, Optional

import torch

import fusedinit._C

NAME = "avx512-simde"
ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "simde" / "avx512_simde.cpp"
HEADER = pathlib.Path("simde") / "x86" / "avx512.h"
# x86-64: FMA on, so that SIMDe's _mm512_fmadd_ps is the hardware fused multiply-add (its
# multiply-then-add fallback would break the contract; avx512_simde.h refuses to build that),
# and F16C, the hardware half conversion the shim is checked against. No AVX-512 flag: then
# SIMDe would use the native instructions. Contraction off and no fast-math, as the package.
X86_FLAGS = ["-mavx2", "-mfma", "-mf16c"]
X86_CPU_FLAGS = {"avx2", "fma", "f16c"}
COMMON_FLAGS = ["-O2", "-std=c++20", "-ffp-contract=off", "-fno-fast-math",
                "-fvisibility=hidden", "-Wno-psabi"]
# Seconds the last build (or up-to-date check) took in this process, for the report.
build_seconds: Optional[float] = None


def include_dirs() -> List[str]:
    """Where SIMDe's headers may be: $FUSEDINIT_SIMDE_INCLUDE, the cmeel-simde wheel (the
    [test] extra installs it), simde-py, the system's (Debian's libsimde-dev)."""
    dirs = []
    if os.environ.get("FUSEDINIT_SIMDE_INCLUDE"):
        dirs.append(os.environ["FUSEDINIT_SIMDE_INCLUDE"])
    try:
        dirs.append(str(importlib.metadata.distribution("cmeel-simde").locate_file("cmeel.prefix/include")))
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import simde_py
        dirs.append(simde_py.get_include())
    except ImportError:
        pass
    return dirs + ["/usr/local/include", "/usr/include"]


def simde_include() -> Optional[str]:
    return next((d for d in include_dirs() if (pathlib.Path(d) / HEADER).is_file()), None)


def _cpu_flags() -> set:
    from conftest import cpu_flags
    return cpu_flags()


def arch_flags() -> Optional[List[str]]:
    """Compiler flags that give SIMDe's fused multiply-add path here, None where there is none."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return X86_FLAGS if X86_CPU_FLAGS <= _cpu_flags() else None
    if machine in ("aarch64", "arm64"):
        return []  # NEON with FMA is the AArch64 baseline: SIMDe uses vfmaq_f32
    return None


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> Optional[str]:
    """Why this machine cannot build the variant, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"the SIMDe test build is set up for Linux, not {sys.platform}"
    if arch_flags() is None:
        return (f"no fused multiply-add path for SIMDe on this CPU ({platform.machine()}; x86-64 "
                f"needs {sorted(X86_CPU_FLAGS)})")
    if simde_include() is None:
        return ("SIMDe headers not found (pip install cmeel-simde, which the [test] extra has, "
                "or set FUSEDINIT_SIMDE_INCLUDE)")
    return None


def required() -> bool:
    """In CI (CI=true) a missing SIMDe variant is a failure, not a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    """Builds (or finds up to date) the test library, adds its variant to the extension's
    table and returns it. Raises if it cannot: callers ask unavailable_reason() first."""
    global build_seconds
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"the {NAME} variant cannot be built here: {reason}")
    from torch.utils import cpp_extension
    build_dir = ROOT / "build" / f"test-simde-{sys.implementation.cache_tag}-torch{torch.__version__}"
    build_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    path = cpp_extension.load(
        name="fusedinit_simde_avx512", sources=[str(SOURCE)],
        extra_cflags=COMMON_FLAGS + arch_flags(),
        extra_include_paths=[str(ROOT / "csrc"), str(SOURCE.parent), simde_include()],
        build_directory=str(build_dir), is_python_module=False, verbose=False)
    build_seconds = time.perf_counter() - start
    lib = ctypes.CDLL(path)
    lib.fusedinit_simde_avx512_kernels.restype = ctypes.c_void_p
    lib.fusedinit_simde_fma_path.restype = ctypes.c_char_p
    lib.fusedinit_native_cvtps_ph.restype = ctypes.c_int
    # The extension's own handle (the library Python already loaded), for its C entry point.
    extension = ctypes.CDLL(fusedinit._C.__file__)
    extension.fusedinit_add_cpu_variant.argtypes = [ctypes.c_void_p]
    extension.fusedinit_add_cpu_variant.restype = ctypes.c_int
    status = extension.fusedinit_add_cpu_variant(lib.fusedinit_simde_avx512_kernels())
    if status != 0:
        raise RuntimeError(f"fusedinit_add_cpu_variant refused {NAME} ({status})")
    return lib


def variants() -> List[str]:
    """[NAME] where the variant can be built (building it on first use), [] where it cannot;
    in CI that raises instead."""
    reason = unavailable_reason()
    if reason is None:
        library()
        return [NAME]
    if required():
        raise RuntimeError(f"CI=true but the {NAME} CPU variant cannot be tested: {reason}")
    return []
