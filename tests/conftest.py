import contextlib
import pathlib
import sys

import pytest
import torch

import fusedinit
import fusedinit.testing
import simde_variant

# Dev tools (tools/ptx_exactness.py) stay out of the shipped package; tests import them from there.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))

BITS_VIEW = {2: torch.int16, 4: torch.int32, 8: torch.int64}
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(BITS_VIEW[t.element_size()])


def assert_bitwise_equal(actual: torch.Tensor, expected: torch.Tensor, msg: str = ""):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, msg
    diff = bits(actual) != bits(expected)
    if diff.any():
        first = int(diff.flatten().nonzero()[0])
        raise AssertionError(
            f"{msg}: {int(diff.sum())} of {diff.numel()} elements differ; first at flat index "
            f"{first}: {actual.flatten()[first].item()!r} vs {expected.flatten()[first].item()!r}")


def storage_bytes(t: torch.Tensor) -> torch.Tensor:
    """A copy of every byte of `t`'s storage, including bytes outside the view (a write
    anywhere in the storage counts, not only in the elements `t` shows)."""
    return torch.empty(0, dtype=torch.uint8, device=t.device).set_(t.untyped_storage()).clone()


@contextlib.contextmanager
def assert_untouched(*tensors: torch.Tensor):
    """The block leaves the storage of every tensor (meta tensors aside) byte for byte as it
    was: NaN payloads, -0.0 and bytes outside the view included."""
    watched = [(i, t, storage_bytes(t)) for i, t in enumerate(tensors) if t.device.type != "meta"]
    yield
    for i, t, before in watched:
        after = storage_bytes(t)
        changed = (before != after).nonzero()
        if changed.numel():
            raise AssertionError(f"tensor {i} was written: {changed.numel()} of {before.numel()} "
                                 f"storage bytes changed, first at byte {int(changed[0])}")


@pytest.fixture(scope="session", autouse=True)
def require_extension():
    assert fusedinit.HAS_EXTENSION, "the compiled extension must be built for the tests"


@pytest.fixture
def cpu_isa():
    """Switch the CPU kernel variant for one test, then restore the automatic choice."""
    yield lambda name: fusedinit.testing.set_cpu_isa(name)
    fusedinit.testing.set_cpu_isa("auto")


# Kernel variant -> the CPU flags it needs (csrc/cpu/isa.cpp asks the same of the compiler).
ISA_FLAGS = {"avx2": {"avx2", "bmi2"},
             "avx512": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}}


def cpu_flags() -> set:
    """The CPU's feature flags: /proc/cpuinfo where there is one, else what torch detects."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()  # "DEFAULT", "AVX2", "AVX512", ...
    return {"AVX2": ISA_FLAGS["avx2"], "AVX512": ISA_FLAGS["avx2"] | ISA_FLAGS["avx512"]}.get(
        capability, set())


def isas():
    """Kernel variants this CPU can run: generic, each variant whose flags the CPU has, and
    "avx512-simde", the AVX-512 kernels on SIMDe's portable intrinsics (tests/simde_variant.py;
    left out only where SIMDe's headers or a fused multiply-add are missing, and never in CI).
    Selecting one of them must succeed (an error here is a failure, not a skipped variant)."""
    flags = cpu_flags()
    names = ["generic"] + [name for name, needs in ISA_FLAGS.items() if needs <= flags]
    names += simde_variant.variants()
    try:
        for name in names:
            selected = fusedinit.testing.set_cpu_isa(name)
            assert selected == name, f"set_cpu_isa({name!r}) selected {selected!r}"
    finally:
        fusedinit.testing.set_cpu_isa("auto")
    return names


@pytest.fixture
def op_calls(monkeypatch):
    """Number of tensors in each fusedinit op call made during the test."""
    calls = []
    real = fusedinit.ops.op.init_

    def spy(tensors, *args):
        calls.append(len(tensors))
        return real(tensors, *args)

    monkeypatch.setattr(fusedinit.ops.op, "init_", spy)
    return calls
