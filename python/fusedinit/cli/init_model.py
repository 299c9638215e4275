"""`python -m fusedinit init-model CONFIG`: build a transformers model with
`fusedinit.from_config` and report parameter count, time and peak memory; with
`--compare-stock`, also stock `from_config` (torch's init) and the speedup."""
from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time

import torch

from . import errors


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


def _check_config_file(path: str) -> None:
    """A config.json must be a JSON object naming a model_type (load_config's own errors for
    these are a JSONDecodeError, or an AttributeError deep inside transformers)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                         f"column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ValueError(f"{path} has no \"model_type\" string")
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"unknown model_type {model_type!r} in {path} (not a model type of "
                         "this transformers version)")


def _load_config(spec: str):
    """The transformers config for spec, or ValueError with a one-line reason."""
    from ..hf.presets import PRESETS, load_config

    if spec not in PRESETS:
        if os.path.isdir(spec):
            path = os.path.join(spec, "config.json")
            if not os.path.isfile(path):
                raise ValueError(f"folder {spec} has no config.json")
            _check_config_file(path)
        elif os.path.exists(spec):
            _check_config_file(spec)
        else:
            raise ValueError(f"{spec!r} is neither a preset ({', '.join(PRESETS)}) nor an "
                             "existing config.json or folder")
    try:
        return load_config(spec)
    except Exception as exc:  # noqa: BLE001 - whatever transformers raises on values it refuses
        raise ValueError(f"{spec}: {type(exc).__name__}: {exc}") from None


def main(argv=None, prog: str = "python -m fusedinit init-model") -> int:
    parser = errors.Parser(prog=prog, description=__doc__)
    parser.add_argument("config", help="config.json path, a folder with one, or a preset: "
                                       "llama-1b, deepseek-v3-1b")
    parser.add_argument("--device", type=errors.device, default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--seed", type=errors.seed, default=0, help="in [0, 2^64)")
    parser.add_argument("--compare-stock", action="store_true",
                        help="also time stock from_config (AutoModelForCausalLM) in this process")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)

    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        parser.error("init-model needs transformers 4.57.x or 5.x (pip install 'transformers>=4.57')")

    from ..hf import from_config
    from ..hf.build import dtype_keyword

    try:
        config = _load_config(args.config)
    except ValueError as exc:
        parser.error(f"argument config: {exc}")
    device = args.device
    dtype = getattr(torch, args.dtype)
    # Import the model's code once, outside both timings (a meta build costs nothing else). This
    # is stock transformers code: whatever it raises comes from the config (no causal-LM class
    # for it, zero heads, ...), so it is reported as a bad input, not as a crash.
    try:
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # noqa: BLE001
        detail = (str(exc).strip().splitlines() or [""])[0]
        parser.error(f"argument config: {args.config}: transformers cannot build a causal LM "
                     f"from this {type(config).__name__} ({type(exc).__name__}: {detail})")
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
