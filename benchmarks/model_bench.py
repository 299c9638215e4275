"""Model-level benchmark: torchtitan Llama 3 (the config as torchtitan ships it, default 1B) on
CPU, same process: stock `to_empty + init_weights()` vs the same under `fusedinit.fuse`.

Two numbers per path: end to end (fresh `to_empty` memory, so both pay first-touch page
faults) and the init step alone on memory already touched (a second `init_weights()` on the
same model). Op calls are counted with a dispatch mode outside the engine (what really ran).

    python benchmarks/model_bench.py [--flavor 1B] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from collections import Counter

import torch


class OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """aten / fusedinit op calls that really ran (entered outside fusedinit.fuse)."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func.namespace] += 1
        if func.namespace == "fusedinit":
            self.calls["fusedinit_ops"] += 1
        if func.__name__.split(".")[0] in ("normal_", "uniform_", "erfinv_"):
            self.calls["torch_random"] += 1
        return func(*args, **(kwargs or {}))


def build(flavor: str):
    import torchtitan.models.llama3 as llama3

    with torch.device("meta"):
        return llama3.model_registry(flavor).model.build()


def run(flavor: str, fused: bool, seed: int) -> dict:
    import fusedinit

    model = build(flavor)
    params = sum(p.numel() for p in model.parameters())

    def init():
        if fused:
            with fusedinit.fuse(model, seed=seed):
                model.init_weights(buffer_device=torch.device("cpu"))
        else:
            model.init_weights(buffer_device=torch.device("cpu"))

    t0 = time.perf_counter()
    model.to_empty(device="cpu")
    init()
    end_to_end = time.perf_counter() - t0
    with OpCounter() as counter:
        t0 = time.perf_counter()
        init()
        touched = time.perf_counter() - t0
    del model
    gc.collect()
    return dict(path="fusedinit.fuse" if fused else "stock", params=params,
                end_to_end_s=end_to_end, init_touched_s=touched,
                aten_calls=counter.calls["aten"], fusedinit_calls=counter.calls["fusedinit_ops"],
                torch_random_calls=counter.calls["torch_random"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavor", default="1B")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torchtitan

    rows = [run(args.flavor, True, args.seed)]
    if not args.skip_stock:
        rows.insert(0, run(args.flavor, False, args.seed))
    print(f"torchtitan {getattr(torchtitan, '__version__', '?')}, torch {torch.__version__}, "
          f"Llama 3 {args.flavor}, float32, CPU, {args.threads} threads")
    print("| path | params | to_empty + init_weights | init_weights, memory touched | "
          "aten calls | fusedinit op calls | torch random calls |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['params'] / 1e9:.2f}B | {r['end_to_end_s']:.2f} s | "
              f"{r['init_touched_s']:.2f} s | {r['aten_calls']} | {r['fusedinit_calls']} | "
              f"{r['torch_random_calls']} |")
    if len(rows) == 2:
        s, f = rows
        print(f"speedup: {s['end_to_end_s'] / f['end_to_end_s']:.1f}x end to end, "
              f"{s['init_touched_s'] / f['init_touched_s']:.1f}x init step")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
