"""`python -m fusedinit init-model CONFIG`: build a transformers model with
`fusedinit.from_config` and report parameter count, time and peak memory; with
`--compare-stock`, also stock `from_config` (torch's init) and the speedup."""
from __future__ import annotations

import argparse
import gc
import resource
import sys
import time

import torch


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # kB on Linux


def _timed(build, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model = build()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return model, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedinit init-model", description=__doc__)
    parser.add_argument("config", help="config.json path, a folder with one, or a preset: "
                                       "llama-1b, deepseek-v3-1b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-stock", action="store_true",
                        help="also time stock from_config (AutoModelForCausalLM) in this process")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    from .hf import from_config
    from .hf.build import dtype_keyword
    from .hf.presets import load_config

    config = load_config(args.config)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    # Import the model's code once, outside both timings (a meta build costs nothing else).
    with torch.device("meta"):
        AutoModelForCausalLM.from_config(config)
    model, seconds = _timed(lambda: from_config(config, device=device, dtype=dtype, seed=args.seed,
                                                progress=args.progress), device)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    peak = _peak_memory_gb(device)
    print(f"{type(model).__name__}: {params / 1e9:.3f}B parameters, {args.dtype}, {device}")
    print(f"fusedinit.from_config: {seconds:.2f} s, peak memory {peak:.2f} GB")
    del model
    gc.collect()
    if args.compare_stock:
        def stock():
            with torch.device(device):
                return AutoModelForCausalLM.from_config(
                    config, **{dtype_keyword(AutoModelForCausalLM.from_config): dtype})

        model, stock_seconds = _timed(stock, device)
        del model
        print(f"stock from_config:     {stock_seconds:.2f} s")
        print(f"speedup: {stock_seconds / seconds:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
