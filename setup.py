"""Build of fusedinit: the CPU kernels always; the CUDA kernels when torch has CUDA and nvcc is found."""
import glob
import os
import sys

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

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


def extensions():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    return [
        CppExtension(
            "fusedinit._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx_flags()},
            extra_link_args=openmp_flags(),
        )
    ]


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
    extras_require={"test": ["pytest", "hypothesis", "scipy", "expecttest"]},
    entry_points={"console_scripts": ["fusedinit-bench=fusedinit.bench:main"]},
)
