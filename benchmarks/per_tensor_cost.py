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


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up (imports, first-call caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=20000)
    parser.add_argument("--numel", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the per-tensor cost, not the parallel write

    tensors = [torch.empty(args.numel) for _ in range(args.tensors)]
    spec = fusedinit.Normal(0.0, 0.02)
    items = [(t, spec) for t in tensors]

    def torch_loop():
        with torch.no_grad():
            for t in tensors:
                t.normal_(0.0, 0.02)

    def fused():
        fusedinit.init_many_(items, seed=1)

    t_torch = best_of(torch_loop, args.repeats)
    t_fused = best_of(fused, args.repeats)
    n = args.tensors
    print(f"{n} tensors of {args.numel} elements (1 thread, best of {args.repeats})")
    print(f"  torch normal_ loop      : {t_torch / n * 1e6:7.2f} us/tensor")
    print(f"  fusedinit.init_many_    : {t_fused / n * 1e6:7.2f} us/tensor  "
          f"({t_fused / t_torch:.2f}x torch)")

    # Hand-made shards: a block partial on two inner dims, and the full tensor it comes from.
    rows = 50000
    block = torch.empty(rows, 2, 4)
    full = torch.empty(rows, 4, 8)
    t_block = best_of(lambda: fusedinit.init_many_([(block, spec, (rows, 4, 8), (0, 1, 2))],
                                                   seed=1), args.repeats)
    t_full = best_of(lambda: fusedinit.init_many_([(full, spec)], seed=1), args.repeats)
    print(f"  block {tuple(block.shape)} of {tuple(full.shape)}: {t_block * 1e3:7.2f} ms "
          f"(the full tensor, {full.numel() // block.numel()}x larger: {t_full * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()
