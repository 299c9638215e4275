"""Thin layer over torch.ops.fusedinit: loads the compiled library, registers fake kernels
(so the ops trace under torch.compile) and says which devices have a compiled kernel."""
from __future__ import annotations

import warnings

import torch

try:
    from . import _C  # noqa: F401  (loading it registers torch.ops.fusedinit.*)

    EXTENSION_ERROR: Exception | None = None
except ImportError as exc:  # a source checkout without a build: the reference still works
    EXTENSION_ERROR = exc

HAS_EXTENSION = EXTENSION_ERROR is None

if HAS_EXTENSION:

    @torch.library.register_fake("fusedinit::init_")
    def _init_fake(tensors, kinds, params, streams, padding_rows, seed, index_map=None):
        return None

    @torch.library.register_fake("fusedinit::emulate_cuda_init_")
    def _emulate_fake(tensors, kinds, params, streams, padding_rows, seed, grid, block,
                      index_map=None):
        return None

    @torch.library.register_fake("fusedinit::philox4x32_10")
    def _philox_fake(counters, keys):
        return counters.new_empty(counters.shape)

    @torch.library.register_fake("fusedinit::transform_words")
    def _transform_fake(words, kind, params):
        return words.new_empty(words.shape, dtype=torch.float32)


_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def has_kernel(device_type: str) -> bool:
    """Whether fusedinit::init_ has a compiled kernel for this device type."""
    if not HAS_EXTENSION or device_type not in _DISPATCH_KEYS:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("fusedinit::init_",
                                                          _DISPATCH_KEYS[device_type])


def init_(tensors, kinds, params, streams, padding_rows, seed: int, placements=None) -> None:
    """One op call for a list of tensors on one device (streams and seed as uint64;
    placements: one (offset, run, run_stride) per tensor, or None)."""
    torch.ops.fusedinit.init_(tensors, kinds, params, [_as_int64(s) for s in streams],
                              padding_rows, _as_int64(seed), index_map(placements))


def index_map(placements):
    """The op's index_map argument: the placements flattened, or None when all are (0, 0, 0)."""
    if placements is None or not any(any(p) for p in placements):
        return None
    return [x for p in placements for x in p]


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
