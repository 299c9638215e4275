"""Hooks for testing the GPU code paths on a machine without a GPU."""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch

from . import _ops
from .api import _plan
from ._seed import resolve_seed


def emulate_cuda_(items: Iterable[Tuple[torch.Tensor, object]], *, seed: Optional[int] = None,
                  grid: int = 4, block: int = 256, generator: Optional[torch.Generator] = None):
    """Run the CUDA kernel's thread body on the host over an emulated `grid` x `block` launch
    (CPU tensors): the same descriptor table, chunking and stores as on the device. Items may
    carry (global_shape, global_offset) as in init_many_."""
    items = list(items)
    plans = [p for i, item in enumerate(items) for p in _plan(i, item)]
    seed = resolve_seed(seed, generator)
    for tensor, *_ in plans:
        if tensor.device.type != "cpu":
            raise ValueError(f"emulate_cuda_ fills CPU tensors, got one on {tensor.device}")
    with torch.no_grad():
        torch.ops.fusedinit.emulate_cuda_init_(
            [p[0] for p in plans], [p[1] for p in plans], [x for p in plans for x in p[2]],
            [_ops._as_int64(p[3]) for p in plans], [p[4] for p in plans], _ops._as_int64(seed),
            grid, block, _ops.index_map([p[5] for p in plans]))
    return [item[0] for item in items]
