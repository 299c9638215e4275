"""Thin layer over torch.ops.fusedinit: loads the compiled library (and its fake kernels, so
the op traces under torch.compile) and says which devices have a compiled kernel."""
from __future__ import annotations

import warnings
from itertools import chain
from typing import NamedTuple, Optional, Sequence

import torch

from ..torch_internals import dispatch_has_kernel

try:
    from .. import _C  # noqa: F401  (loading it registers torch.ops.fusedinit.*)

    EXTENSION_ERROR: Optional[Exception] = None
except ImportError as exc:  # a source checkout without a build: the reference still works
    EXTENSION_ERROR = exc

HAS_EXTENSION = EXTENSION_ERROR is None

# scan_plain(tensors, dtypes) -> "cpu" | "cuda" | None: the bulk checks of init_many_'s common
# call, in one C++ pass (csrc/plain_scan.cpp); None without the extension.
scan_plain = _C.scan_plain if HAS_EXTENSION else None

if HAS_EXTENSION:
    from . import fake  # noqa: F401  (the module the library names for its fake kernels)


class Placement(NamedTuple):
    """Where a tensor sits in a larger logical tensor: its element i (row-major) has logical
    index offset + (i // run) * run_stride + i % run (run 0: offset + i) - runs of `run`
    consecutive logical indices, `run_stride` apart. The op's index_map holds one per tensor."""

    offset: int = 0
    run: int = 0
    run_stride: int = 0


WHOLE = Placement()

_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}
# Asked once, at import: registrations do not change afterwards, and torch.compile cannot
# trace the dispatcher query.
_HAS_KERNEL = {device_type: HAS_EXTENSION and dispatch_has_kernel(
    "fusedinit::init_", key) for device_type, key in _DISPATCH_KEYS.items()}


def has_kernel(device_type: str) -> bool:
    """Whether fusedinit::init_ has a compiled kernel for this device type."""
    return _HAS_KERNEL.get(device_type, False)


def init_(tensors: Sequence[torch.Tensor], kinds: Sequence[int], params: Sequence[float],
          streams: Sequence[int], padding_rows: Sequence[int], seed: int,
          placements: Optional[Sequence[Placement]] = None) -> None:
    """One op call for a list of tensors on one device (streams and seed as uint64;
    placements: one Placement per tensor, or None)."""
    if streams and max(streams) >= _I64:  # (asked first: the conversion runs per tensor)
        streams = [s if s < _I64 else s - _U64 for s in streams]  # as _as_int64, inline
    torch.ops.fusedinit.init_(tensors, kinds, params, streams, padding_rows, _as_int64(seed),
                              index_map(placements))


def index_map(placements: Optional[Sequence[Placement]]) -> Optional[list]:
    """The op's index_map argument: the placements flattened, or None when all are WHOLE."""
    if placements is None or placements.count(WHOLE) == len(placements):
        return None
    return list(chain.from_iterable(placements))


_I64, _U64 = 1 << 63, 1 << 64


def _as_int64(x: int) -> int:
    """uint64 -> the int64 with the same bits (the schema's int is signed)."""
    return x - (1 << 64) if x >= (1 << 63) else x


_warned = False


def warn_no_extension() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"fusedinit: compiled kernels unavailable ({EXTENSION_ERROR}); "
                      "using the slow pure-PyTorch reference", RuntimeWarning, stacklevel=3)
