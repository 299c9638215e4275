"""Peak memory and time of `deferred_init` for a model whose constructor draws every weight
before registering it (`nn.Parameter(torch.randn(h, h) * 0.02)`, research-code style), against
building it normally. Each measurement runs in a fresh process (peak RSS is per process), on one thread.

    PYTHONPATH=python python benchmarks/deferred_memory.py [--layers 64] [--hidden 4096]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(mode: str, layers: int, hidden: int) -> None:
    import torch
    from torch import nn

    import fusedinit

    class Drawn(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ParameterList(
                nn.Parameter(torch.randn(hidden, hidden) * 0.02) for _ in range(layers))
            self.norms = nn.ParameterList(nn.Parameter(torch.ones(hidden)) for _ in range(layers))

    torch.set_num_threads(1)
    fusedinit.deferred_init(nn.Linear, 4, 4)  # first-call imports and caches, for both modes
    before = _peak_mb()
    start = time.perf_counter()
    if mode == "stock":
        model = Drawn()
    else:
        model = fusedinit.deferred_init(Drawn)
        if mode == "deferred+materialize":
            fusedinit.materialize_(model, device="cpu", seed=0)
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps(dict(mode=mode, seconds=seconds, peak_growth_mb=_peak_mb() - before,
                          param_mb=params * 4 / 2**20, params=params)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--child", choices=("stock", "deferred", "deferred+materialize"))
    args = parser.parse_args()
    if args.child:
        child(args.child, args.layers, args.hidden)
        return
    for mode in ("deferred", "deferred+materialize", "stock"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--layers",
                              str(args.layers), "--hidden", str(args.hidden)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{mode:21s} {r['params'] / 1e9:.2f}B params ({r['param_mb']:.0f} MiB): "
              f"{r['seconds']:7.2f} s, peak RSS growth {r['peak_growth_mb']:8.1f} MiB "
              f"({100 * r['peak_growth_mb'] / r['param_mb']:.2f}% of the parameters' bytes)")


if __name__ == "__main__":
    main()
