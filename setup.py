"""Build of fusedinit: the CPU kernels always; the CUDA kernels too when torch has CUDA and a
matching toolkit is found and works (setup_cuda.py), else a CPU-only build with one warning.
FUSEDINIT_NO_CUDA=1 skips the CUDA kernels; FUSEDINIT_REQUIRE_CUDA=1 fails instead of skipping."""
import glob
import os
import sys

from setuptools import find_packages, setup
import torch
from torch.utils import cpp_extension
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)  # setup_cuda.py sits next to this file; the build backend may not add it
import setup_cuda  # noqa: E402


TRANSFORMERS = "transformers>=4.57,<6"


def cxx_flags():
    # Contraction off and no fast-math: the contract's arithmetic must round exactly as written.
    flags = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
    if os.environ.get("FUSEDINIT_DEBUG"):
        flags = ["-O0", "-g", "-ffp-contract=off"]
    return flags + openmp_flags()


def openmp_flags():
    # at::parallel_for is a header template: without OpenMP here it silently runs serially.
    return ["-fopenmp"] if sys.platform.startswith("linux") else []


# Host code shared with the CUDA launcher, always built: the emulated CUDA grid runs on CPU.
HOST_SOURCES = ["csrc/cuda/launch_plan.cpp", "csrc/cuda/emulate.cpp"]
# One init_kernel_<N>.cu per descriptor capacity: they compile in parallel.
CUDA_SOURCES = ["csrc/cuda/init_cuda.cpp"] + sorted(glob.glob("csrc/cuda/init_kernel_*.cu"))

# Contraction off (--fmad=false) and no fast math: every float op of the contract must round
# exactly as written. Targets: sm_80 and sm_90 SASS plus sm_90 PTX, or TORCH_CUDA_ARCH_LIST's
# (setup_cuda.gencode_flags). --threads: a file's targets compile in parallel.
NVCC_FLAGS = ["-O3", "--fmad=false", "--threads=3",
              "-Xptxas=-v" if os.environ.get("FUSEDINIT_PTXAS_VERBOSE") else ""]


def cuda_extension(sources):
    return CUDAExtension("fusedinit._C", sources + CUDA_SOURCES,
                         extra_compile_args={"cxx": cxx_flags(), "nvcc": nvcc_flags()},
                         **common_args())


def cpu_extension(sources):
    return CppExtension("fusedinit._C", sources, extra_compile_args={"cxx": cxx_flags()},
                        **common_args())


def common_args():
    return dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=openmp_flags())


def nvcc_flags():
    return [f for f in NVCC_FLAGS if f] + setup_cuda.gencode_flags()[0]


def cpu_sources():
    return sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp")) + HOST_SOURCES


def use_toolkit(toolkit: setup_cuda.Toolkit) -> None:
    # cpp_extension read CUDA_HOME when it was imported (from the folder above the first nvcc on
    # PATH, maybe a wrapper's); its include/library paths and the nvcc that BuildExtension runs
    # all come from that module global, so point it, and the environment, at the real root.
    os.environ["CUDA_HOME"] = toolkit.root
    cpp_extension.CUDA_HOME = toolkit.root


class BuildFusedinit(BuildExtension.with_options(use_ninja=True)):
    """Chooses the CUDA or the CPU-only build when the build really runs (not for metadata), and
    falls back to the CPU-only build whenever the CUDA toolchain cannot build the kernels: an
    install never fails because of CUDA unless FUSEDINIT_REQUIRE_CUDA=1 asks for that."""

    def build_extensions(self) -> None:
        require = setup_cuda.env_flag("FUSEDINIT_REQUIRE_CUDA")
        if require and setup_cuda.env_flag("FUSEDINIT_NO_CUDA"):
            raise SystemExit("error: FUSEDINIT_REQUIRE_CUDA=1 and FUSEDINIT_NO_CUDA=1 contradict each other")
        skipped = None  # why the CUDA kernels were wanted but not built
        toolkit = None
        if setup_cuda.env_flag("FUSEDINIT_NO_CUDA"):
            pass
        elif torch.version.cuda is None:
            if require:
                raise SystemExit(f"error: FUSEDINIT_REQUIRE_CUDA=1 but torch {torch.__version__} "
                                 "was built without CUDA")
        else:
            gencode, note = setup_cuda.gencode_flags()
            if not gencode:
                skipped = note
            else:
                if note:
                    print("NOTE: " + note, file=sys.stderr, flush=True)
                toolkit, skipped = setup_cuda.find_toolkit(torch.version.cuda, nvcc_flags())
        if toolkit is not None:
            use_toolkit(toolkit)
            self._configure(cuda_extension(cpu_sources()))
            try:
                super().build_extensions()
            except Exception as exc:  # a toolchain problem the probe compile did not catch
                if require:
                    raise
                lines = str(exc).strip().splitlines()
                skipped = f"the CUDA build failed ({lines[-1] if lines else type(exc).__name__})"
                # BuildExtension wrapped the compiler's compile methods; start from the originals.
                for name in ("compile", "_compile"):
                    self.compiler.__dict__.pop(name, None)
                toolkit = None
        if toolkit is None:
            if skipped:
                if require:
                    raise SystemExit(f"error: FUSEDINIT_REQUIRE_CUDA=1 but the CUDA kernels cannot "
                                     f"be built: {skipped}")
                print("WARNING: " + setup_cuda.skip_warning(skipped, torch.version.cuda),
                      file=sys.stderr, flush=True)
            self._configure(cpu_extension(cpu_sources()))
            super().build_extensions()
        self._write_build_info(toolkit is not None, skipped)

    def _configure(self, chosen) -> None:
        # setuptools keeps private bookkeeping on the Extension it finalized; swap only the
        # public build settings.
        for ext in self.extensions:
            if ext.name == chosen.name:
                ext.__dict__.update({k: v for k, v in vars(chosen).items() if not k.startswith("_")})

    def _write_build_info(self, cuda: bool, skipped) -> None:
        # Next to the built extension: pip -q hides the build log, so the CLI shows why the CUDA
        # kernels are missing.
        path = os.path.join(os.path.dirname(self.get_ext_fullpath("fusedinit._C")), "_build_info.py")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("# Written by setup.py when the extension was built.\n"
                    f"CUDA_KERNELS = {cuda!r}\n"
                    f"CUDA_SKIPPED = {skipped!r}  # why CUDA kernels were wanted but not built\n")
        self._build_info = path

    def copy_extensions_to_source(self) -> None:
        # In-place and editable builds copy the extension into the source tree; the build info too.
        super().copy_extensions_to_source()
        if getattr(self, "_build_info", None):
            package_dir = self.get_finalized_command("build_py").get_package_dir("fusedinit")
            self.copy_file(self._build_info, os.path.join(package_dir, "_build_info.py"))


setup(
    name="fusedinit",
    version="0.1.0",
    description="Fused, bit-reproducible weight initialization for very large PyTorch models",
    packages=find_packages("python"),
    package_dir={"": "python"},
    ext_modules=[cpu_extension(cpu_sources())],  # made a CUDA extension at build time if possible
    cmdclass={"build_ext": BuildFusedinit},
    python_requires=">=3.11",
    install_requires=["torch>=2.4", "numpy", "tqdm", "matplotlib"],
    # The transformers versions the integration supports (4.57.x and 5.x); in "test" too, so
    # the README's test command runs the integration's tests instead of skipping them.
    # cmeel-simde: SIMDe's headers (a pure wheel, so it installs under --no-build-isolation;
    # simde-py is an sdist that needs setuptools_scm to build), for the tests' SIMDe build of
    # the AVX-512 kernels (tests/simde_variant.py).
    extras_require={"test": ["pytest", "hypothesis", "scipy", "expecttest", TRANSFORMERS,
                             "cmeel-simde"],
                    "hf": [TRANSFORMERS]},
    entry_points={"console_scripts": ["fusedinit-bench=fusedinit.cli.bench:main"]},
)
