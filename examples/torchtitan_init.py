"""torchtitan without a seed checkpoint: build on meta, (parallelize), to_empty, then the
model's own `init_weights()` under `fusedinit.fuse` - every init write batched into one op call
per device, values independent of the parallelism layout.

    python examples/torchtitan_init.py [--model llama3|deepseek_v3] [--flavor debugmodel]
                                       [--seed 1234] [--compare-stock]

Distributed: run the same steps under torchrun after torchtitan's `parallelize_*` (see
tests/torchtitan_workers.py for the FSDP2 / FSDP2 x TP flow on gloo); every rank writes its own
shards, equal to what this single process writes.
"""
from __future__ import annotations

import argparse
import importlib
import time

import torch

import fusedinit


class _Count(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.fused = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.fused += func.namespace == "fusedinit"
        return func(*args, **(kwargs or {}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama3", choices=["llama3", "deepseek_v3"])
    parser.add_argument("--flavor", default="debugmodel")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--compare-stock", action="store_true",
                        help="also time torchtitan's own init_weights() on the same model")
    args = parser.parse_args(argv)

    family = importlib.import_module(f"torchtitan.models.{args.model}")
    config = family.model_registry(args.flavor).model
    with torch.device("meta"):
        model = config.build()
    # ... parallelize_fn(model, ...) here in a distributed job ...
    model.to_empty(device="cpu")
    t0 = time.perf_counter()
    with _Count() as count, fusedinit.fuse(model, seed=args.seed):
        model.init_weights(buffer_device=torch.device("cpu"))
    fused = time.perf_counter() - t0
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.model} {args.flavor}: {n / 1e6:.1f}M parameters, fusedinit.fuse + init_weights "
          f"{fused:.2f} s, {count.fused} fusedinit op call(s)")
    for name, p in list(model.named_parameters())[:6]:
        p = p.detach()
        print(f"  {name:48s} std {float(p.std()):.5f}  min {float(p.min()):+.4f}  "
              f"max {float(p.max()):+.4f}")
    if args.compare_stock:
        t0 = time.perf_counter()
        model.init_weights(buffer_device=torch.device("cpu"))
        stock = time.perf_counter() - t0
        print(f"stock init_weights (memory touched): {stock:.2f} s ({stock / fused:.1f}x)")


if __name__ == "__main__":
    main()
