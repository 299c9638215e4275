"""Shards of a larger logical tensor: a DTensor's local shard, or a block given by
`global_shape` / `global_offset`. Every element gets the value of its index in the logical
(global) tensor, so any sharding of a tensor holds exactly the values of the unsharded one,
without communication and without materializing anything but the local block.

The kernels take a placement per tensor - (offset, run, run_stride): element i has logical
index offset + (i / run) * run_stride + i % run - which covers a block sharded on any one
dim (and most multi-dim blocks) in one entry; other blocks are cut into a few such pieces."""
from __future__ import annotations

import itertools
import math
from typing import List, Optional, Sequence, Tuple

import torch


def _dtensor_types():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed
        return None
    return DTensor


def is_dtensor(t) -> bool:
    cls = _dtensor_types()
    return cls is not None and isinstance(t, cls)


def dtensor_block(t, where: str) -> Tuple[torch.Tensor, Tuple[int, ...], Tuple[int, ...]]:
    """(local tensor, global shape, global offset of the local block) of a DTensor."""
    from torch.distributed.tensor import Partial, Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for p in t.placements:
        if isinstance(p, Partial):
            raise ValueError(f"{where} is a DTensor with a Partial placement ({p}): its local "
                             "tensors are summands, not values; redistribute it to Shard or "
                             "Replicate before initializing")
        if type(p) not in (Shard, Replicate):
            raise NotImplementedError(f"{where}: DTensor placement {p!r} is not supported "
                                      "(Shard and Replicate are)")
    local = t.to_local()
    shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    if tuple(shape) != tuple(local.shape):
        raise RuntimeError(f"{where}: local shard has shape {tuple(local.shape)}, the mesh "
                           f"implies {tuple(shape)}")
    return local, tuple(t.shape), tuple(int(o) for o in offset)


def check_block(local: torch.Tensor, global_shape, global_offset, where: str):
    """Validate global_shape / global_offset for a local tensor; returns them as tuples."""
    if global_shape is None and global_offset is None:
        return None, None
    if global_shape is None or global_offset is None:
        raise ValueError(f"{where}: global_shape and global_offset go together")
    gs = tuple(int(x) for x in global_shape)
    go = tuple(int(x) for x in global_offset)
    if len(gs) != local.dim() or len(go) != local.dim():
        raise ValueError(f"{where}: global_shape {gs} and global_offset {go} need one entry per "
                         f"dimension of the local tensor {tuple(local.shape)}")
    for k, (n, size, off) in enumerate(zip(local.shape, gs, go)):
        if off < 0 or off + n > size:
            raise ValueError(f"{where}: dimension {k}: the local block [{off}, {off + n}) is "
                             f"outside global_shape {gs}")
    return gs, go


def pieces(local: torch.Tensor, global_shape: Sequence[int], global_offset: Sequence[int],
           padding_row: int) -> List[Tuple[torch.Tensor, Tuple[int, int, int], int, bool]]:
    """[(view, placement (offset, run, run_stride), local padding row or -1, whole view is
    padding)] covering `local`; `padding_row` is a global row of dim 0 (-1: none).

    The dims after the last partial dim k are whole, so the local sub-block over dims k.. is
    one run of consecutive global indices (run = its size); consecutive runs are `run_stride`
    apart when the leading dims step linearly - always for one leading dim (a 2-D tensor
    sharded on dim 1, a [E, I, H] tensor on dim 1) - so one entry covers the whole block.
    Otherwise the block is split over all leading dims but the last."""
    n, size, off = list(local.shape), list(global_shape), list(global_offset)
    d = len(n)
    if d == 0:
        return [(local, (0, 0, 0), -1, False)]
    gstride = [math.prod(size[k + 1:]) for k in range(d)]
    partial = [k for k in range(d) if n[k] != size[k] or off[k] != 0]
    k = partial[-1] if partial else 0
    base = sum(o * g for o, g in zip(off, gstride))
    row = padding_row - off[0] if padding_row >= 0 else -1
    row = row if 0 <= row < n[0] else -1
    if k == 0:
        return [(local, (base, 0, 0), row, False)]
    run, stride = math.prod(n[k:]), gstride[k - 1]
    if all(gstride[j] == stride * math.prod(n[j + 1:k]) for j in range(k)):
        return [(local, (base, run, stride), row, False)]
    out = []
    for idx in itertools.product(*(range(n[j]) for j in range(k - 1))):
        start = base + sum(i * gstride[j] for j, i in enumerate(idx))
        zero = padding_row >= 0 and off[0] + idx[0] == padding_row
        out.append((local[idx], (start, run, stride), -1, zero))
    return out
