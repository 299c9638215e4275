"""Cost of the interception engine per intercepted op: a module of many small parameters, each
set by one `nn.init.ones_` / `zeros_` call, run as is (stock torch) and inside
`fusedinit.fuse`, side by side in one process (CPU, one thread). Prints microseconds per op for
the loop alone (before the fuse block's flush) and for the whole block (opening the recording,
the loop, the one flushed write), and the ratio to stock.

    PYTHONPATH=python python benchmarks/engine_overhead.py [--params 16000] [--numel 16]
"""
from __future__ import annotations

import argparse
import gc
import time
from typing import Callable, Dict

import torch
from torch import nn

import fusedinit


def make_module(params: int, numel: int) -> nn.Module:
    """`params // 2` LayerNorm-like pairs (weight, bias): the small tensors of a real model."""
    module = nn.Module()
    module.weights = nn.ParameterList(nn.Parameter(torch.empty(numel)) for _ in range(params // 2))
    module.biases = nn.ParameterList(nn.Parameter(torch.empty(numel))
                                     for _ in range(params - params // 2))
    return module


def init_loop(module: nn.Module) -> None:
    for w in module.weights:
        nn.init.ones_(w)
    for b in module.biases:
        nn.init.zeros_(b)


def timed_runs(module: nn.Module) -> Dict[str, float]:
    """Seconds of: the stock loop; the loop inside fuse (up to the flush); the whole fuse block.
    Each starts from a collected heap, so a full collection owed by earlier allocations (the
    module's construction) is not billed to whichever part happens to run next; the
    collections a part's own allocations cause are in its time."""
    gc.collect()
    start = time.perf_counter()
    init_loop(module)
    stock = time.perf_counter() - start
    gc.collect()
    start = time.perf_counter()
    with fusedinit.fuse(module, seed=0):
        loop_start = time.perf_counter()
        init_loop(module)
        loop = time.perf_counter() - loop_start
    total = time.perf_counter() - start
    return {"stock": stock, "fuse_loop": loop, "fuse_total": total}


def best_of(fn: Callable[[], Dict[str, float]], repeats: int) -> Dict[str, float]:
    """Best time of each part over `repeats` runs (a shared, noisy machine slows all alike)."""
    fn()  # warm-up: imports, first-call caches
    best: Dict[str, float] = {}
    for _ in range(repeats):
        for name, seconds in fn().items():
            best[name] = min(best.get(name, float("inf")), seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=16000)
    parser.add_argument("--numel", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the per-op cost, not the parallel write

    module = make_module(args.params, args.numel)
    best = best_of(lambda: timed_runs(module), args.repeats)
    ops = args.params
    us = {name: seconds / ops * 1e6 for name, seconds in best.items()}
    print(f"{ops} parameters of {args.numel} elements, one init op each "
          f"(best of {args.repeats}, torch {torch.__version__})")
    print(f"  stock torch          {us['stock']:7.2f} us/op  {best['stock'] * 1e3:8.1f} ms")
    print(f"  fuse, loop only      {us['fuse_loop']:7.2f} us/op  {best['fuse_loop'] * 1e3:8.1f} ms"
          f"  ({best['fuse_loop'] / best['stock']:.2f}x stock)")
    print(f"  fuse, whole block    {us['fuse_total']:7.2f} us/op  {best['fuse_total'] * 1e3:8.1f} ms"
          f"  ({best['fuse_total'] / best['stock']:.2f}x stock)")


if __name__ == "__main__":
    main()
