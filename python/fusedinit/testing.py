"""Hooks for testing: the ops of the `fusedinit_testing` library (Philox and the value
transform on raw words, the CPU kernel variant switch, the CUDA thread body emulated on the
host). They are kept out of the user-facing `torch.ops.fusedinit` namespace."""
from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

import torch

from .ops import op
from .ops.api import plan
from .ops.seed import resolve_seed


def _require_extension() -> None:
    if not op.HAS_EXTENSION:
        raise RuntimeError(f"fusedinit.testing needs the compiled extension ({op.EXTENSION_ERROR})")


def philox4x32_10(counters: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Philox4x32-10 of (N, 4) counters under (N, 2) keys (uint32 values in int64 tensors)."""
    _require_extension()
    return torch.ops.fusedinit_testing.philox4x32_10(counters, keys)


def transform_words(words: torch.Tensor, kind: int, params: List[float]) -> torch.Tensor:
    """float32 values, before rounding to a dtype, of 32-bit words (int64 tensor) under the
    active CPU kernel variant."""
    _require_extension()
    return torch.ops.fusedinit_testing.transform_words(words, kind, params)


def cpu_isa() -> str:
    """Name of the CPU kernel variant in use ("generic", "avx2", "avx512" or a test's)."""
    _require_extension()
    return torch.ops.fusedinit_testing.cpu_isa()


def set_cpu_isa(name: str) -> str:
    """Switch the CPU kernel variant ("auto", "generic", "avx2", "avx512", or one the tests
    added, such as "avx512-simde"); returns the one now active. Raises if this CPU cannot run
    it."""
    _require_extension()
    return torch.ops.fusedinit_testing.set_cpu_isa(name)


def emulate_cuda_(items: Iterable[Tuple[torch.Tensor, object]], *, seed: Optional[int] = None,
                  grid: int = 4, block: int = 256,
                  generator: Optional[torch.Generator] = None) -> List[torch.Tensor]:
    """Run the CUDA kernel's thread body on the host over an emulated `grid` x `block` launch
    (CPU tensors): the same descriptor table, chunking and stores as on the device. Items may
    carry (global_shape, global_offset) as in init_many_."""
    _require_extension()
    items = list(items)
    groups = plan(items)
    for device in groups:
        if device.type != "cpu":
            raise ValueError(f"emulate_cuda_ fills CPU tensors, got one on {device}")
    seed = resolve_seed(seed, generator)
    with torch.no_grad():
        for c in groups.values():
            torch.ops.fusedinit_testing.emulate_cuda_init_(
                c.tensors, c.kinds, c.params, [op._as_int64(s) for s in c.streams],
                c.padding_rows, op._as_int64(seed), grid, block, op.index_map(c.placements))
    return [item[0] for item in items]
