"""Where a module's local tensors sit in a global model that the framework describes (Megatron-
Core's dist-checkpointing keys, global shapes and offsets): a parameter's values are then those
of its elements' global indices in the global tensor it is part of, on that tensor's stream -
the same for every parallel layout that cuts the global tensor differently.

A local parameter may hold several blocks of one global tensor (a gated MLP's fc1 under tensor
parallelism holds a slice of w and a slice of v) or blocks of several (one per local expert);
each block is a strided view of the parameter. A framework may describe a block by a copy it
makes (Megatron's grouped experts make `.contiguous()` copies of transposed views): `block_of`
recovers the view from the local indices the copy holds."""
from __future__ import annotations

import dataclasses
import math
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch

from ..ops.specs import Constant, on_stream
from .streams import param_stream


class GlobalBlock(NamedTuple):
    """A part of a (contiguous) local tensor `t`: `t.as_strided(size, stride, t.storage_offset()
    + offset)`, which is the block at `global_offset` of the global tensor `key` (of shape
    `global_shape`, one entry per dim of `size`), drawn on `param_stream(key)`."""

    key: str
    size: Tuple[int, ...]
    stride: Tuple[int, ...]
    offset: int
    global_shape: Tuple[int, ...]
    global_offset: Tuple[int, ...]
    lead: int = 0  # leading dims that are the framework's stacked axes (local size one)

    def view(self, local: torch.Tensor) -> torch.Tensor:
        return local.as_strided(self.size, self.stride, local.storage_offset() + self.offset)

    def own_shape(self) -> Tuple[int, ...]:
        """The global tensor's shape without the stacked axes: what the parameter is a block
        of (a layer's full weight, one expert's)."""
        return self.global_shape[self.lead:]

    def item(self, local: torch.Tensor, spec) -> tuple:
        """The init_many_ item writing `spec` to this block of `local` (a padding row is the
        caller's: it is a row of the local tensor, not of the global one)."""
        if type(spec) is not Constant and hasattr(spec, "stream"):
            spec = on_stream(spec, param_stream(self.key))
            if getattr(spec, "padding_idx", None) is not None:
                spec = dataclasses.replace(spec, padding_idx=None)
        return (self.view(local), spec, self.global_shape, self.global_offset)


# parameter name (in the module written) -> its blocks, which together cover it once
Places = Mapping[str, Sequence[GlobalBlock]]


def whole_block(shape: Sequence[int], key: str, global_shape: Sequence[int],
                global_offset: Sequence[int]) -> GlobalBlock:
    """The whole contiguous local tensor of `shape` as one block; `global_shape` may have more
    (leading) dims than `shape` - the stacked layer axis of Megatron's keys - each of size one
    in the local tensor."""
    return view_block(torch.empty(tuple(shape), device="meta"), key, global_shape, global_offset)


def view_block(view: torch.Tensor, key: str, global_shape: Sequence[int],
               global_offset: Sequence[int]) -> GlobalBlock:
    """The block `view` (a view of a contiguous local tensor) is; `global_shape` may have
    leading dims beyond `view`'s, of local size one."""
    lead = len(global_shape) - view.dim()
    if lead < 0:
        raise ValueError(f"{key}: global shape {tuple(global_shape)} has fewer dims than the "
                         f"local block {tuple(view.shape)}")
    return GlobalBlock(key, (1,) * lead + tuple(view.shape), (0,) * lead + tuple(view.stride()),
                       view.storage_offset(), tuple(int(n) for n in global_shape),
                       tuple(int(n) for n in global_offset), lead)


def local_indices(shape: Sequence[int]) -> torch.Tensor:
    """Each element's flat index in a contiguous tensor of `shape` (the smallest integer type
    that holds them): what a framework's view-or-copy functions are run on to find out which
    elements a block holds."""
    n = math.prod(int(s) for s in shape)
    dtype = torch.int32 if n <= torch.iinfo(torch.int32).max else torch.int64
    return torch.arange(n, dtype=dtype).view(tuple(shape))


def block_of(held: torch.Tensor, local: torch.Tensor, key: str, global_shape: Sequence[int],
             global_offset: Sequence[int]) -> Optional[GlobalBlock]:
    """The block whose elements are the local elements `held` holds - `held` computed from
    `local = local_indices(local shape)` by the framework's views and copies - if those are a
    strided view of the local tensor; else None. Leading dims of `global_shape` beyond `held`'s
    dims are stacked axes (local size one)."""
    shape = tuple(held.shape)
    lead = len(global_shape) - len(shape)
    if lead < 0:
        return None
    gs, go = tuple(int(n) for n in global_shape), tuple(int(n) for n in global_offset)
    if held.numel() == 0:
        return GlobalBlock(key, (1,) * lead + shape, (0,) * (lead + len(shape)), 0, gs, go, lead)
    flat = held.reshape(-1)
    offset = int(flat[0])
    stride: List[int] = []
    for d, n in enumerate(shape):  # the step to the next element along each dim
        step = [0] * len(shape)
        step[d] = 1
        stride.append(int(held[tuple(step)]) - offset if n > 1 else 0)
    if any(s <= 0 for s, n in zip(stride, shape) if n > 1):  # overlapping or reversed
        return None
    flat_local = local.reshape(-1)
    extent = offset + sum((n - 1) * s for n, s in zip(shape, stride))
    if offset < 0 or extent >= flat_local.numel() or \
            not torch.equal(flat_local.as_strided(shape, stride, offset), held):
        return None
    return GlobalBlock(key, (1,) * lead + shape, (0,) * lead + tuple(stride), offset, gs, go, lead)


def check_cover(name: str, numel: int, blocks: Sequence[GlobalBlock]) -> None:
    """The blocks of one parameter hold as many elements as it does (block_of already made
    sure each is a view of it; a framework describes disjoint blocks)."""
    held = sum(math.prod(b.size) for b in blocks)
    if held != numel:
        raise ValueError(f"{name}: its global blocks hold {held} elements, the parameter "
                         f"{numel}")


def placed_items(places: Places, name: Optional[str], local: torch.Tensor,
                 spec) -> Optional[List[tuple]]:
    """The init_many_ items writing `spec` to the parameter `name` (its memory: `local`) block
    by block; None if `name` has no place."""
    blocks = places.get(name) if name is not None else None
    if blocks is None:
        return None
    return [b.item(local, spec) for b in blocks]


def padding_row(spec) -> Optional[int]:
    """The local row a placed write zeroes after its blocks (`padding_idx` of the local
    tensor: `nn.Embedding(padding_idx=)`, `weight[i].zero_()` after a draw); None if none."""
    return getattr(spec, "padding_idx", None)


__all__ = ["GlobalBlock", "Places", "whole_block", "view_block", "local_indices", "block_of",
           "check_cover", "placed_items", "padding_row"]
