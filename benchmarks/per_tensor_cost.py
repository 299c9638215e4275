"""Per-tensor overhead of fusedinit.init_many_ against torch's own loop of normal_ calls, side
by side in one process (CPU): many small prebuilt tensors, so the time is the bookkeeping per
tensor, not the writing. Also times hand-made shards that are blocks of a larger tensor.

    PYTHONPATH=python python benchmarks/per_tensor_cost.py [--tensors 20000] [--numel 32]
"""
from __future__ import annotations

import argparse
import time

import torch

import fusedinit


def best_of(fns, repeats: int) -> list:
    """Best time of each function, the functions run alternately (a shared, noisy machine
    slows both alike)."""
    for fn in fns:
        fn()  # warm-up (imports, first-call caches)
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=20000)
    parser.add_argument("--numel", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the per-tensor cost, not the parallel write

    tensors = [torch.empty(args.numel) for _ in range(args.tensors)]
    spec = fusedinit.Normal(0.0, 0.02)
    items = [(t, spec) for t in tensors]

    def torch_loop():
        with torch.no_grad():
            for t in tensors:
                t.normal_(0.0, 0.02)

    # The same items as 4-tuples without a shard: they skip the bulk checks of plain pairs
    # and are checked item by item (the path of shards, DTensors and padding rows).
    items_one_by_one = [(t, spec, None, None) for t in tensors]

    def fused():
        fusedinit.init_many_(items, seed=1)

    def fused_one_by_one():
        fusedinit.init_many_(items_one_by_one, seed=1)

    t_torch, t_fused, t_items = best_of([torch_loop, fused, fused_one_by_one], args.repeats)
    n = args.tensors
    print(f"{n} tensors of {args.numel} elements (1 thread, best of {args.repeats})")
    print(f"  torch normal_ loop      : {t_torch / n * 1e6:7.2f} us/tensor")
    print(f"  fusedinit.init_many_    : {t_fused / n * 1e6:7.2f} us/tensor  "
          f"({t_fused / t_torch:.2f}x torch)")
    print(f"    item by item (4-tuples): {t_items / n * 1e6:6.2f} us/tensor  "
          f"({t_items / t_torch:.2f}x torch)")

    # Hand-made shards: a block partial on two inner dims, and the full tensor it comes from.
    rows = 50000
    block = torch.empty(rows, 2, 4)
    full = torch.empty(rows, 4, 8)
    t_block, t_full = best_of([
        lambda: fusedinit.init_many_([(block, spec, (rows, 4, 8), (0, 1, 2))], seed=1),
        lambda: fusedinit.init_many_([(full, spec)], seed=1)], args.repeats)
    print(f"  block {tuple(block.shape)} of {tuple(full.shape)}: {t_block * 1e3:7.2f} ms "
          f"(the full tensor, {full.numel() // block.numel()}x larger: {t_full * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
