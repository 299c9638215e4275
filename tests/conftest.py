import pytest
import torch

import fusedinit
import fusedinit.testing

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


@pytest.fixture(scope="session", autouse=True)
def require_extension():
    assert fusedinit.HAS_EXTENSION, "the compiled extension must be built for the tests"


@pytest.fixture
def cpu_isa():
    """Switch the CPU kernel variant for one test, then restore the automatic choice."""
    yield lambda name: fusedinit.testing.set_cpu_isa(name)
    fusedinit.testing.set_cpu_isa("auto")


def isas():
    """Kernel variants this CPU can run."""
    names = []
    for name in ("generic", "avx2", "avx512"):
        try:
            fusedinit.testing.set_cpu_isa(name)
            names.append(name)
        except (RuntimeError, ValueError):
            pass
    fusedinit.testing.set_cpu_isa("auto")
    return names
