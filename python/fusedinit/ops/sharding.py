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
from typing import List, NamedTuple, Sequence, Tuple

import torch

from .op import WHOLE, Placement
from ..torch_internals import strided_shard_offsets, strided_shard_type


_DTENSOR = []  # the DTensor class once looked up ([None] without torch.distributed)


def _dtensor_type():
    if not _DTENSOR:
        try:
            from torch.distributed.tensor import DTensor
        except ImportError:  # torch without distributed
            DTensor = None
        _DTENSOR.append(DTensor)
    return _DTENSOR[0]


def is_dtensor(t) -> bool:
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


class Piece(NamedTuple):
    """A view of a local block that one op entry writes."""

    view: torch.Tensor
    placement: Placement
    padding_row: int   # local row of dim 0 of the view to zero, -1: none
    all_padding: bool  # the whole view lies in the padding row


def dtensor_blocks(t, where: str) -> Tuple[torch.Tensor, Tuple[int, ...],
                                           List[Tuple[torch.Tensor, Tuple[int, ...]]]]:
    """(local tensor, global shape, [(view of local, global offset of that block)]) of a
    DTensor. With Shard / Replicate placements the local tensor is one block; a _StridedShard
    (FSDP2 over TP) holds along its dim several runs of global indices, so the local tensor is
    the product of those runs: one block per combination (split_factor of them per dim)."""
    from torch.distributed.tensor import Partial, Replicate, Shard

    strided = _strided_shard_type()
    for p in t.placements:
        if isinstance(p, Partial):
            raise ValueError(f"{where} is a DTensor with a Partial placement ({p}): its local "
                             "tensors are summands, not values; redistribute it to Shard or "
                             "Replicate before initializing")
        if not isinstance(p, (Shard, Replicate)) and not (strided and isinstance(p, strided)):
            raise NotImplementedError(f"{where}: DTensor placement {p!r} is not supported "
                                      "(Shard, _StridedShard and Replicate are)")
    local = t.to_local()
    shape = tuple(t.shape)
    indices = global_indices(t)
    if tuple(len(ix) for ix in indices) != tuple(local.shape):
        raise RuntimeError(f"{where}: local shard has shape {tuple(local.shape)}, the mesh "
                           f"implies {tuple(len(ix) for ix in indices)}")
    per_dim = [_runs(ix) for ix in indices]  # [(local start, global start, length)] per dim
    blocks = []
    for combo in itertools.product(*per_dim):
        view = local[tuple(slice(ls, ls + n) for ls, _, n in combo)]
        blocks.append((view, tuple(gs for _, gs, _ in combo)))
    return local, shape, blocks


def _strided_shard_type():
    return strided_shard_type()


def global_indices(t) -> List[range]:
    """For each dim of a DTensor, the global indices its local shard holds, in local order:
    the mesh's placements applied left to right, each splitting the indices the previous ones
    left (as torch does it; computed locally, no collective)."""
    from torch.distributed.tensor import Shard

    strided = _strided_shard_type()
    mesh = t.device_mesh
    coordinate = mesh.get_coordinate()
    if coordinate is None:  # this rank holds no part of the mesh
        return [range(0) for _ in t.shape]
    indices: List[Sequence[int]] = [range(n) for n in t.shape]
    for mesh_dim, p in enumerate(t.placements):
        if strided is not None and isinstance(p, strided):
            size, offsets = strided_shard_offsets(
                p, len(indices[p.dim]), mesh.size(mesh_dim), coordinate[mesh_dim])
            taken = list(offsets) if size else []
        elif isinstance(p, Shard):
            size, first = Shard.local_shard_size_and_offset(
                len(indices[p.dim]), mesh.size(mesh_dim), coordinate[mesh_dim])
            indices[p.dim] = indices[p.dim][first:first + size]  # a range stays a range
            continue
        else:
            continue
        previous = indices[p.dim]
        indices[p.dim] = [previous[i] for i in taken]
    return indices


def _runs(global_idx: Sequence[int]) -> List[Tuple[int, int, int]]:
    """(local start, global start, length) of each run of consecutive global indices."""
    if isinstance(global_idx, range):  # Shard and Replicate dims: one run, O(1)
        return [(0, global_idx.start, len(global_idx))]
    runs: List[Tuple[int, int, int]] = []
    for local_i, g in enumerate(global_idx):
        if runs and runs[-1][1] + runs[-1][2] == g:
            ls, gs, n = runs[-1]
            runs[-1] = (ls, gs, n + 1)
        else:
            runs.append((local_i, g, 1))
    return runs or [(0, 0, 0)]


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
           padding_row: int) -> List[Piece]:
    """Pieces covering `local`; `padding_row` is a global row of dim 0 (-1: none).

    The dims after the last partial dim k are whole, so the local sub-block over dims k.. is
    one run of consecutive global indices (run = its size). Of the leading dims, a segment
    [p, q] whose dims p+1..q are whole steps linearly (run_stride = global stride of q) and
    stays in the view; the other leading dims are enumerated, one piece per index. The segment
    with the most elements is kept, so a block partial on one dim besides dim 0 (a 2-D tensor
    sharded on dim 1, a [E, I, H] tensor on dim 1, a block partial on dims 0 and 1) is one
    piece, and one partial on two inner dims is as many pieces as the smaller leading extent."""
    n, size, off = list(local.shape), list(global_shape), list(global_offset)
    d = len(n)
    if d == 0:
        return [Piece(local, WHOLE, -1, False)]
    gstride = [math.prod(size[k + 1:]) for k in range(d)]
    partial = [k for k in range(d) if n[k] != size[k] or off[k] != 0]
    k = partial[-1] if partial else 0
    base = sum(o * g for o, g in zip(off, gstride))
    row = padding_row - off[0] if padding_row >= 0 else -1
    row = row if 0 <= row < n[0] else -1
    if k == 0:
        return [Piece(local, Placement(base, 0, 0), row, False)]
    run = math.prod(n[k:])
    best = None  # (elements kept, p, q)
    for q in range(k):
        p = q
        while p > 0 and n[p] == size[p]:
            p -= 1
        kept = math.prod(n[p:q + 1])
        if best is None or kept > best[0]:
            best = (kept, p, q)
    _, p, q = best
    enumerated = [j for j in range(k) if not p <= j <= q]
    if not enumerated:
        return [Piece(local, Placement(base, run, gstride[q]), row, False)]
    out = []
    for idx in itertools.product(*(range(n[j]) for j in enumerated)):
        index = [slice(None)] * d
        start = base
        for j, i in zip(enumerated, idx):
            index[j] = i
            start += i * gstride[j]
        if p == 0:  # dim 0 stays in the view: its padding row stays a row of the view
            piece_row, zero = row, False
        else:
            piece_row, zero = -1, padding_row >= 0 and off[0] + idx[0] == padding_row
        out.append(Piece(local[tuple(index)], Placement(start, run, gstride[q]), piece_row, zero))
    return out
