"""Public tensor API: in place, no autograd, returns the tensor, like torch.nn.init.

Every function is a thin case of `init_many_`, which checks everything first (so bad input
leaves every tensor untouched), resolves the seed once and makes one op call per device.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Optional, Sequence, Tuple

import torch

from . import _ops, reference, sharding
from . import _cuda_arch
from ._seed import resolve_seed
from .specs import SPECS, Constant, Normal, TruncNormal, Uniform

CONSTANT_ZERO = Constant(0.0)

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
BACKENDS = (None, "cpu", "cuda", "triton", "reference")


def normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, *,
            padding_idx: Optional[int] = None, seed: Optional[int] = None, stream: int = 0,
            generator: Optional[torch.Generator] = None, backend: Optional[str] = None,
            global_shape=None, global_offset=None):
    """Fill with N(mean, std^2); with `padding_idx`, that row of dim 0 is exactly zero and every
    other row gets exactly the values it would get without it. `tensor` may be a DTensor, or
    (global_shape, global_offset) may say it is that block of a larger logical tensor: either
    way it gets exactly the values of its elements in the logical tensor."""
    spec = Normal(mean, std, padding_idx=padding_idx, stream=stream)
    init_many_([(tensor, spec, global_shape, global_offset)], seed=seed, generator=generator,
               backend=backend)
    return tensor


def uniform_(tensor: torch.Tensor, a: float = 0.0, b: float = 1.0, *, seed: Optional[int] = None,
             stream: int = 0, generator: Optional[torch.Generator] = None,
             backend: Optional[str] = None, global_shape=None, global_offset=None):
    """Fill with U[a, b) (DTensors and global_shape / global_offset as in normal_)."""
    init_many_([(tensor, Uniform(a, b, stream=stream), global_shape, global_offset)], seed=seed,
               generator=generator, backend=backend)
    return tensor


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0, *, seed: Optional[int] = None, stream: int = 0,
                  generator: Optional[torch.Generator] = None, backend: Optional[str] = None,
                  global_shape=None, global_offset=None):
    """Fill with N(mean, std^2) truncated to the absolute bounds [a, b] (as torch.nn.init)."""
    init_many_([(tensor, TruncNormal(mean, std, a, b, stream=stream), global_shape,
                 global_offset)], seed=seed, generator=generator, backend=backend)
    return tensor


def init_many_(items: Iterable[Tuple[torch.Tensor, object]], *, seed: Optional[int] = None,
               generator: Optional[torch.Generator] = None, backend: Optional[str] = None):
    """Initialize every (tensor, spec) pair with one shared seed: one op call per device.
    An item may also be (tensor, spec, global_shape, global_offset) for a hand-made shard;
    DTensors are written shard by shard (each rank its local block, no communication)."""
    items = list(items)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    plans = [p for i, item in enumerate(items) for p in _plan(i, item)]
    seed = resolve_seed(seed, generator)
    groups = defaultdict(list)
    for plan in plans:
        tensor = plan[0]
        if tensor.device.type == "meta" or tensor.numel() == 0:
            continue  # nothing to write: meta tensors are returned unchanged
        groups[tensor.device].append(plan)
    with torch.no_grad():
        for device, group in groups.items():
            _run(device, group, seed, backend)
    return [item[0] for item in items]


def _plan(index: int, item) -> list:
    """Check one item; returns [(tensor, kind, params, stream, padding_row, placement)]:
    one entry, or the pieces of a shard (sharding.py)."""
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 4):
        raise TypeError(f"items[{index}] must be a (tensor, spec) pair or a (tensor, spec, "
                        "global_shape, global_offset) tuple")
    tensor, spec = item[0], item[1]
    global_shape, global_offset = (item[2], item[3]) if len(item) == 4 else (None, None)
    where = f"items[{index}]" if index else "tensor"
    if sharding.is_dtensor(tensor):
        if global_shape is not None or global_offset is not None:
            raise ValueError(f"{where} is a DTensor: its placements give its global shape and "
                             "offset; do not pass global_shape / global_offset")
        tensor, global_shape, global_offset = sharding.dtensor_block(tensor, where)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(tensor).__name__}")
    if not isinstance(spec, SPECS):
        raise TypeError(f"spec of {where} must be one of Normal, Uniform, TruncNormal, Constant; "
                        f"got {type(spec).__name__}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{where} has dtype {tensor.dtype}; fusedinit fills float32, float64, "
                        f"bfloat16 and float16 tensors")
    if torch._debug_has_internal_overlap(tensor) == 1:
        raise RuntimeError(f"{where} has elements that share memory (e.g. an expanded tensor); "
                           "in-place initialization would be ill-defined, clone it first")
    global_shape, global_offset = sharding.check_block(tensor, global_shape, global_offset, where)
    padding_row = -1
    if spec.padding_idx is not None:
        if tensor.dim() == 0:
            raise IndexError(f"padding_idx needs a tensor with at least one dimension ({where})")
        rows = tensor.shape[0] if global_shape is None else global_shape[0]
        if not -rows <= spec.padding_idx < rows:
            raise IndexError(f"padding_idx {spec.padding_idx} out of range for dim 0 of size "
                             f"{rows} ({where})")
        padding_row = spec.padding_idx % rows
    if global_shape is None:
        return [(tensor, spec.kind, spec.params(), spec.stream, padding_row, (0, 0, 0))]
    out = []
    for view, placement, row, zero in sharding.pieces(tensor, global_shape, global_offset,
                                                      padding_row):
        kind, params = (CONSTANT_ZERO.kind, CONSTANT_ZERO.params()) if zero else (spec.kind, spec.params())
        out.append((view, kind, params, spec.stream, row, placement))
    return out


def _run(device: torch.device, group: Sequence[tuple], seed: int, backend: Optional[str]):
    impl = _choose(device, backend)
    if impl == "reference":
        for tensor, kind, params, stream, padding_row, placement in group:
            reference.init_(tensor, kind=kind, params=params, seed=seed, stream=stream,
                            padding_row=padding_row, placement=placement)
        return
    args = ([g[0] for g in group], [g[1] for g in group], [p for g in group for p in g[2]],
            [g[3] for g in group], [g[4] for g in group], seed, [g[5] for g in group])
    if impl == "triton":
        from . import triton as triton_backend
        triton_backend.init_(*args)
    else:
        _ops.init_(*args)


def _choose(device: torch.device, backend: Optional[str]) -> str:
    """"op" (the compiled kernel registered for the device), "triton" or "reference"."""
    if backend == "reference":
        return "reference"
    if backend is None:
        too_old = device.type == "cuda" and not _cuda_arch.cuda_kernels_run_on(device)
        if _ops.has_kernel(device.type) and not too_old:
            return "op"  # on CUDA the CUDA kernel: see README, "Which GPU backend"
        if device.type == "cuda" and _triton_error(device) is None:
            return "triton"
        if too_old and _ops.has_kernel("cuda"):
            raise RuntimeError(f"fusedinit: no GPU backend for {device}: "
                               f"{_cuda_arch.too_old_message(device)}, and the Triton backend "
                               f"is unavailable ({_triton_error(device)}); pass "
                               "backend='reference' for the (slow) pure-PyTorch path")
        if not _ops.HAS_EXTENSION:
            _ops.warn_no_extension()
        return "reference"
    if backend == "triton":
        error = _triton_error(device)
        if error is not None:
            raise RuntimeError(f"backend='triton' cannot fill a tensor on {device}: {error}")
        return "triton"
    if device.type != backend:
        raise ValueError(f"backend={backend!r} cannot fill a tensor on {device}")
    if not _ops.has_kernel(device.type):
        why = (_ops.EXTENSION_ERROR if not _ops.HAS_EXTENSION else
               "this build of fusedinit has no CUDA kernels (built without a CUDA torch or nvcc)")
        raise RuntimeError(f"backend={backend!r}: the compiled kernel is not available ({why})")
    if device.type == "cuda" and not _cuda_arch.cuda_kernels_run_on(device):
        raise RuntimeError(f"backend='cuda': {_cuda_arch.too_old_message(device)}; use "
                           "backend='triton' (or None to pick it)")
    return "op"


def _triton_error(device: torch.device) -> Optional[str]:
    """Why the Triton kernel cannot fill tensors on `device`, or None."""
    from . import triton as triton_backend
    from .triton import interpreting

    error = triton_backend.import_error()
    if error is not None:
        return f"triton is not importable ({error})"
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return None
    return "it runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)"


__all__ = ["normal_", "uniform_", "trunc_normal_", "init_many_", "Normal", "Uniform",
           "TruncNormal", "Constant"]
