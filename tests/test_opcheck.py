"""torch.library conventions: opcheck on every op (schema, fake kernels, dispatcher)."""
import pytest
import torch

import fusedinit  # noqa: F401


def init_args(dtype):
    tensors = [torch.empty(5, 7, dtype=dtype), torch.empty(3, dtype=dtype),
               torch.empty(4, 6, dtype=dtype).t()]
    return (tensors, [0, 1, 2], [0.0, 1.0, 0, 0, 0, 0, -1.0, 1.0, 0, 0, 0, 0,
                                 0.0, 1.0, -1.0, 1.0, 0.15865525393145707, 0.8413447460685429],
            [1, 2, 3], [2, -1, -1], 42)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_opcheck_init(dtype):
    torch.library.opcheck(torch.ops.fusedinit.init_.default, init_args(dtype))


def test_opcheck_init_with_index_map():
    index_map = [0, 0, 0, 5, 0, 0, 1 << 40, 2, 6]
    torch.library.opcheck(torch.ops.fusedinit.init_.default, init_args(torch.float32) + (index_map,))


def test_opcheck_emulated_cuda():
    args = init_args(torch.bfloat16)
    torch.library.opcheck(torch.ops.fusedinit_testing.emulate_cuda_init_.default, args + (3, 32, [0, 0, 0, 3, 0, 0, 8, 2, 9]))


def test_opcheck_philox():
    counters = torch.randint(0, 2**32, (8, 4), dtype=torch.int64)
    keys = torch.randint(0, 2**32, (8, 2), dtype=torch.int64)
    torch.library.opcheck(torch.ops.fusedinit_testing.philox4x32_10.default, (counters, keys))


def test_opcheck_transform_words():
    words = torch.randint(0, 2**32, (64,), dtype=torch.int64)
    torch.library.opcheck(torch.ops.fusedinit_testing.transform_words.default, (words, 0, [0.0, 1.0, 0, 0, 0, 0]))


def test_kernels_registered_per_dispatch_key():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("fusedinit::init_", "CPU")
    assert fusedinit.available_backends()[0] == "cpu"


def test_init_under_torch_compile():
    """The op traces with its fake kernel; the compiled function writes the same bits."""
    def fill(t):
        torch.ops.fusedinit.init_([t], [0], [0.0, 1.0, 0, 0, 0, 0], [0], [-1], 7)
        return t * 1

    compiled = torch.compile(fill, backend="eager", fullgraph=True)
    assert torch.equal(compiled(torch.empty(16)), fill(torch.empty(16)))
