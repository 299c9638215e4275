"""Public tensor API: in place, no autograd, returns the tensor, like torch.nn.init.

Every function is a thin case of `init_many_`, which checks everything first (so bad input
leaves every tensor and the torch RNG untouched), then resolves the seed once and makes one op
call per device. The writes are in-place writes as far as autograd is concerned (versions
bumped), made under no_grad like torch.nn.init's.
"""
from __future__ import annotations

from collections import defaultdict
from itertools import chain
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch

from . import cuda_arch, op, reference, sharding
from .kinds import PARAMS_PER_TENSOR as _P
from .op import WHOLE, Placement
from .overlap import byte_range, has_internal_overlap, shared_memory_pairs
from .seed import resolve_seed
from .specs import LARGEST, SPECS, Constant, Normal, TruncNormal, Uniform, check_dtype

CONSTANT_ZERO = Constant(0.0)

SUPPORTED_DTYPES = tuple(LARGEST)
BACKENDS = (None, "cpu", "cuda", "triton", "reference")


def normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, *,
            padding_idx: Optional[int] = None, seed: Optional[int] = None, stream: int = 0,
            generator: Optional[torch.Generator] = None, backend: Optional[str] = None,
            global_shape=None, global_offset=None) -> torch.Tensor:
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
             backend: Optional[str] = None, global_shape=None, global_offset=None) -> torch.Tensor:
    """Fill with U[a, b) (DTensors and global_shape / global_offset as in normal_)."""
    init_many_([(tensor, Uniform(a, b, stream=stream), global_shape, global_offset)], seed=seed,
               generator=generator, backend=backend)
    return tensor


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0, *, seed: Optional[int] = None, stream: int = 0,
                  generator: Optional[torch.Generator] = None, backend: Optional[str] = None,
                  global_shape=None, global_offset=None) -> torch.Tensor:
    """Fill with N(mean, std^2) truncated to the absolute bounds [a, b] (as torch.nn.init)."""
    init_many_([(tensor, TruncNormal(mean, std, a, b, stream=stream), global_shape,
                 global_offset)], seed=seed, generator=generator, backend=backend)
    return tensor


class Entry(NamedTuple):
    """One tensor of an op call: what to write and where it sits in its logical tensor."""

    tensor: torch.Tensor
    kind: int
    params: Tuple[float, ...]
    stream: int
    padding_row: int  # row of dim 0 written as zeros, -1: none
    placement: Placement


class Columns(NamedTuple):
    """The op's arguments for the tensors of one device, column by column (op.init_)."""

    tensors: List[torch.Tensor]
    kinds: List[int]
    params: List[float]  # PARAMS_PER_TENSOR a tensor, one flat list
    streams: List[int]
    padding_rows: List[int]  # row of dim 0 written as zeros, -1: none
    placements: Optional[List[Placement]]  # None: every tensor is WHOLE


def init_many_(items: Iterable[Tuple[torch.Tensor, object]], *, seed: Optional[int] = None,
               generator: Optional[torch.Generator] = None,
               backend: Optional[str] = None) -> List[torch.Tensor]:
    """Initialize every (tensor, spec) pair with one shared seed: one op call per device.
    An item may also be (tensor, spec, global_shape, global_offset) for a hand-made shard;
    DTensors are written shard by shard (each rank its local block, no communication).

    Everything is checked before the seed is drawn and before anything is written, so a
    failing call leaves every tensor and the torch RNG untouched."""
    items = list(items)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    groups = plan(items)
    groups.pop(_META, None)  # meta tensors are returned unchanged
    impls = {device: _choose(device, backend) for device in groups}
    seed = resolve_seed(seed, generator)
    with torch.no_grad():
        for device, columns in groups.items():
            _run(impls[device], columns, seed)
    return [item[0] for item in items]


_META = torch.device("meta")
_PLAIN = frozenset((torch.Tensor, torch.nn.Parameter))  # tensor types that are never DTensors


def plan(items: Sequence) -> Dict[torch.device, Columns]:
    """Check every item and the items together (no two may share memory); returns the op's
    columns per device, for the tensors with elements to write (meta tensors included, for
    the caller to skip). The common call passes the bulk check (_bulk_columns) and is
    planned without Python code per tensor; any other call, and a common one that fails a
    check, is checked item by item, which raises the error naming the item. Under
    torch.compile the checks Dynamo cannot trace are left to the op (C++)."""
    compiling = torch.compiler.is_compiling()
    if not compiling:
        groups = _bulk_columns(items)
        if groups is not None:
            return groups
    entries: List[Entry] = []
    written: List[torch.Tensor] = []
    ranges: List[Tuple[int, int, int]] = []
    for index, item in enumerate(items):
        local, item_entries = _check_item(index, item, compiling)
        entries.extend(item_entries)
        written.append(local)
        if not compiling and local.numel() and not local.is_meta:
            ranges.append(byte_range(local) + (index,))
    if len(ranges) > 1:
        pairs = shared_memory_pairs(written, ranges)
        if pairs:
            i, j = pairs[0]
            raise RuntimeError(f"items[{i}] and items[{j}] share memory (the same tensor twice, "
                               "or overlapping views): each element must be written once")
    by_device: Dict[torch.device, List[Entry]] = defaultdict(list)
    for entry in entries:
        if entry.tensor.numel():
            by_device[entry.tensor.device].append(entry)
    groups = {}
    for device, group in by_device.items():
        tensors, kinds, params, streams, padding_rows, placements = zip(*group)
        groups[device] = Columns(list(tensors), list(kinds), list(chain.from_iterable(params)),
                                 list(streams), list(padding_rows), list(placements))
    return groups


def _bulk_columns(items: Sequence) -> Optional[Dict[torch.device, Columns]]:
    """The columns of the common call - every item a (plain dense contiguous tensor, spec)
    pair, all on one device, no two sharing memory - checked in bulk: type sets over the
    columns, spec work once per distinct spec object (and once per tensor of a spec with a
    padding row), the tensor checks in one C++ pass (op.scan_plain). None when any item is
    not of that kind or any check fails. A model of 10^5 tensors pays this on every rank, so
    no Python code runs per tensor (but per padded or empty one)."""
    if (not items or op.scan_plain is None or set(map(type, items)) != {tuple}
            or set(map(len, items)) != {2}):
        return None
    tensors, specs = zip(*items)
    if not _PLAIN.issuperset(map(type, tensors)) or not set(map(type, specs)).issubset(SPECS):
        return None
    by_id = dict(zip(map(id, specs), specs))
    bound = max(spec.largest_value for spec in by_id.values())
    dtypes = tuple(dtype for dtype, largest in LARGEST.items() if bound <= largest)
    if op.scan_plain(tensors, dtypes) is None:
        return None
    n = len(tensors)
    padding_rows = [-1] * n
    padded = {i for i, spec in by_id.items() if spec.padding_idx is not None}
    if padded:  # (few tensors: embeddings)
        for k in [k for k, i in enumerate(map(id, specs)) if i in padded]:
            try:
                padding_rows[k] = _padding_row(specs[k].padding_idx, tensors[k], None, "")
            except IndexError:
                return None
    numels = list(map(torch.Tensor.numel, tensors))
    if 0 in numels:  # the op is given the tensors with elements to write, as plan's other path
        keep = [k for k, count in enumerate(numels) if count]
        if not keep:
            return {}
        tensors, specs = [tensors[k] for k in keep], [specs[k] for k in keep]
        padding_rows = [padding_rows[k] for k in keep]
        n = len(keep)
    if len(by_id) == 1:
        spec = specs[0]
        kinds, params, streams = [spec.kind] * n, list(spec.op_params) * n, [spec.stream] * n
    else:
        ids = list(map(id, specs))
        kinds = list(map({i: s.kind for i, s in by_id.items()}.__getitem__, ids))
        params = list(chain.from_iterable(map(
            {i: s.op_params for i, s in by_id.items()}.__getitem__, ids)))
        streams = list(map({i: s.stream for i, s in by_id.items()}.__getitem__, ids))
    return {tensors[0].device: Columns(list(tensors), kinds, params, streams, padding_rows, None)}


def _check_item(index: int, item, compiling: bool) -> Tuple[torch.Tensor, List[Entry]]:
    """Check one item; returns (the local tensor written, its entries)."""
    if not isinstance(item, (tuple, list)) or len(item) not in (2, 4):
        raise TypeError(f"items[{index}] must be a (tensor, spec) pair or a (tensor, spec, "
                        "global_shape, global_offset) tuple")
    tensor, spec = item[0], item[1]
    global_shape, global_offset = (item[2], item[3]) if len(item) == 4 else (None, None)
    where = f"items[{index}]" if index else "tensor"
    if type(tensor) not in _PLAIN and sharding.is_dtensor(tensor):
        if global_shape is not None or global_offset is not None:
            raise ValueError(f"{where} is a DTensor: its placements give its global shape and "
                             "offset; do not pass global_shape / global_offset")
        tensor, global_shape, blocks = sharding.dtensor_blocks(tensor, where)
    else:
        blocks = None
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{where} must be a torch.Tensor, got {type(tensor).__name__}")
    if not isinstance(spec, SPECS):
        raise TypeError(f"spec of {where} must be one of Normal, Uniform, TruncNormal, Constant; "
                        f"got {type(spec).__name__}")
    # Layout first: the other checks (and their messages) assume a dense tensor.
    if tensor.layout != torch.strided or tensor.is_nested:
        what = "a nested tensor" if tensor.is_nested else f"layout {tensor.layout}"
        raise TypeError(f"{where} has {what}; fusedinit fills dense (strided) tensors (for a "
                        "sparse or nested tensor, initialize its values())")
    largest = LARGEST.get(tensor.dtype)
    if largest is None:
        raise TypeError(f"{where} has dtype {tensor.dtype}; fusedinit fills float32, float64, "
                        f"bfloat16 and float16 tensors")
    if spec.largest_value > largest:
        check_dtype(spec, tensor.dtype, where)
    if not compiling:  # the op checks these itself (op_args.h)
        if tensor.is_inference() and not torch.is_inference_mode_enabled():
            raise RuntimeError(f"{where} is an inference tensor: in-place update to an inference "
                               "tensor outside InferenceMode is not allowed (clone it first)")
        if not tensor.is_contiguous() and has_internal_overlap(tensor):
            raise RuntimeError(f"{where} has elements that share memory (e.g. an expanded or "
                               "unfolded view); in-place initialization would be ill-defined, "
                               "clone it first")
    if blocks is None and (global_shape is not None or global_offset is not None):
        global_shape, global_offset = sharding.check_block(tensor, global_shape, global_offset,
                                                           where)
        blocks = [(tensor, global_offset)]
    padding_row = (-1 if spec.padding_idx is None else
                   _padding_row(spec.padding_idx, tensor, global_shape, where))
    if global_shape is None:
        return tensor, [Entry(tensor, spec.kind, spec.op_params, spec.stream, padding_row, WHOLE)]
    out = []
    for view, offset in blocks:
        for piece in sharding.pieces(view, global_shape, offset, padding_row):
            zero = piece.all_padding
            out.append(Entry(piece.view, CONSTANT_ZERO.kind if zero else spec.kind,
                             CONSTANT_ZERO.op_params if zero else spec.op_params, spec.stream,
                             piece.padding_row, piece.placement))
    return tensor, out


def _padding_row(padding_idx: int, tensor: torch.Tensor, global_shape, where: str) -> int:
    """The row of dim 0 (of the logical tensor, when global_shape is given) that padding_idx
    names, in [0, rows)."""
    if tensor.dim() == 0:
        raise IndexError(f"padding_idx needs a tensor with at least one dimension ({where})")
    rows = tensor.shape[0] if global_shape is None else global_shape[0]
    if not -rows <= padding_idx < rows:
        raise IndexError(f"padding_idx {padding_idx} out of range for dim 0 of size {rows} "
                         f"({where})")
    return padding_idx % rows


def _run(impl: str, columns: Columns, seed: int) -> None:
    if impl == "reference":
        placements = columns.placements or [WHOLE] * len(columns.tensors)
        for k, tensor in enumerate(columns.tensors):
            reference.init_(tensor, kind=columns.kinds[k], seed=seed,
                            params=columns.params[_P * k:_P * (k + 1)], stream=columns.streams[k],
                            padding_row=columns.padding_rows[k], placement=placements[k])
        return
    args = (*columns[:5], seed, columns.placements)
    if impl == "triton":
        from .. import triton as triton_backend

        triton_backend.init_(*args)
        # The Triton kernel writes behind autograd's back: bump the versions as an in-place
        # torch op does (the compiled op does it in C++).
        torch.autograd.graph.increment_version(args[0])
    else:
        op.init_(*args)


def _choose(device: torch.device, backend: Optional[str]) -> str:
    """"op" (the compiled kernel registered for the device), "triton" or "reference"."""
    if backend == "reference":
        return "reference"
    if backend is None:
        too_old = device.type == "cuda" and not cuda_arch.cuda_kernels_run_on(device)
        if op.has_kernel(device.type) and not too_old:
            return "op"  # on CUDA the CUDA kernel: see README, "Which GPU backend"
        if device.type == "cuda" and _triton_error(device) is None:
            return "triton"
        if too_old and op.has_kernel("cuda"):
            raise RuntimeError(f"fusedinit: no GPU backend for {device}: "
                               f"{cuda_arch.too_old_message(device)}, and the Triton backend "
                               f"is unavailable ({_triton_error(device)}); pass "
                               "backend='reference' for the (slow) pure-PyTorch path")
        if not op.HAS_EXTENSION:
            op.warn_no_extension()
        return "reference"
    if backend == "triton":
        error = _triton_error(device)
        if error is not None:
            raise RuntimeError(f"backend='triton' cannot fill a tensor on {device}: {error}")
        return "triton"
    if device.type != backend:
        raise ValueError(f"backend={backend!r} cannot fill a tensor on {device}")
    if not op.has_kernel(device.type):
        why = (op.EXTENSION_ERROR if not op.HAS_EXTENSION else
               "this build of fusedinit has no CUDA kernels (built without a CUDA torch or nvcc)")
        raise RuntimeError(f"backend={backend!r}: the compiled kernel is not available ({why})")
    if device.type == "cuda" and not cuda_arch.cuda_kernels_run_on(device):
        raise RuntimeError(f"backend='cuda': {cuda_arch.too_old_message(device)}; use "
                           "backend='triton' (or None to pick it)")
    return "op"


def _triton_error(device: torch.device) -> Optional[str]:
    """Why the Triton kernel cannot fill tensors on `device`, or None."""
    from .. import triton as triton_backend
    from ..triton import interpreting

    error = triton_backend.import_error()
    if error is not None:
        return f"triton is not importable ({error})"
    if device.type == "cuda" or (device.type == "cpu" and interpreting()):
        return None
    return "it runs on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)"


__all__ = ["normal_", "uniform_", "trunc_normal_", "init_many_", "Normal", "Uniform",
           "TruncNormal", "Constant"]
