"""Build of fusedinit: the CPU kernels always; the CUDA kernels when torch has CUDA and nvcc is found."""
import glob
import os
import sys

from setuptools import find_packages, setup
import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


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

# sm_80 and sm_90 SASS plus sm_90 PTX for newer GPUs. Contraction off (--fmad=false) and no
# fast math: every float op of the contract must round exactly as written.
# --threads: the three targets of each file compile in parallel (the GPU check builds in its
# 5-minute budget).
NVCC_FLAGS = ["-O3", "--fmad=false", "--threads=3",
              "-Xptxas=-v" if os.environ.get("FUSEDINIT_PTXAS_VERBOSE") else "",
              "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
              "-gencode=arch=compute_90,code=compute_90"]


def build_cuda() -> bool:
    """CUDA kernels when torch was built with CUDA and a toolkit is found (FUSEDINIT_NO_CUDA=1
    skips them); a GPU is not needed to build."""
    if os.environ.get("FUSEDINIT_NO_CUDA"):
        return False
    return torch.version.cuda is not None and CUDA_HOME is not None


def extensions():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp")) + HOST_SOURCES
    common = dict(include_dirs=[os.path.join(ROOT, "csrc")], extra_link_args=openmp_flags())
    if build_cuda():
        return [CUDAExtension("fusedinit._C", sources + CUDA_SOURCES,
                              extra_compile_args={"cxx": cxx_flags(),
                                                  "nvcc": [f for f in NVCC_FLAGS if f]},
                              **common)]
    return [CppExtension("fusedinit._C", sources, extra_compile_args={"cxx": cxx_flags()},
                         **common)]


setup(
    name="fusedinit",
    version="0.1.0",
    description="Fused, bit-reproducible weight initialization for very large PyTorch models",
    packages=find_packages("python"),
    package_dir={"": "python"},
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "tqdm", "matplotlib"],
    extras_require={"test": ["pytest", "hypothesis", "scipy", "expecttest"],
                    "hf": ["transformers>=4.57"]},
    entry_points={"console_scripts": ["fusedinit-bench=fusedinit.bench:main"]},
)
