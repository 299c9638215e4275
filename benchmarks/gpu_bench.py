"""On a GPU: cross-check CUDA == Triton == CPU bit for bit, then time fusedinit against torch's
normal_ and against fill_ (a non-zero value: the write roofline) with triton.testing.do_bench
(medians). Prints the table last; --json writes every number.

    python benchmarks/gpu_bench.py [--min-log2 24] [--max-log2 30] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import fusedinit

DISTRIBUTIONS = {
    "normal": fusedinit.Normal(0.0, 0.02, stream=7),
    "uniform": fusedinit.Uniform(-0.1, 0.1, stream=8),
    "trunc_normal": fusedinit.TruncNormal(0.0, 0.02, -0.04, 0.04, stream=9),
    "normal+padding": fusedinit.Normal(0.0, 0.02, padding_idx=3, stream=10),
}
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def cross_check(max_log2: int, backends) -> list:
    """Every dtype and distribution at 2^20 + 3 (all backends and the CPU); float32 and bfloat16
    normal up to 2^max_log2. Returns the failures."""
    failures = []
    cases = [(1 << 20) + 3]
    for n in cases + [1 << k for k in range(24, max_log2 + 1, 2)]:
        for dtype in DTYPES:
            for name, spec in DISTRIBUTIONS.items():
                if n > cases[0] and (name != "normal" or dtype not in (torch.float32, torch.bfloat16)):
                    continue
                shape = (n // 1024, 1024) if n % 1024 == 0 else (n,)
                if len(shape) == 1 and spec.padding_idx is not None:
                    shape = (1, n)
                outs = {}
                for backend in backends:
                    t = torch.empty(shape, dtype=dtype, device="cuda")
                    fusedinit.init_many_([(t, spec)], seed=2024, backend=backend)
                    outs[backend] = t
                cpu = fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=2024,
                                           backend="cpu")[0]
                first = backends[0]
                ok = all(torch.equal(_bits(outs[b]), _bits(outs[first])) for b in backends)
                ok = ok and torch.equal(_bits(outs[first].cpu()), _bits(cpu))
                status = "ok" if ok else "MISMATCH"
                print(f"check n={n} {dtype} {name}: {'=='.join(backends)}==cpu {status}",
                      flush=True)
                if not ok:
                    failures.append((n, str(dtype), name))
                del outs, cpu
    torch.cuda.empty_cache()
    return failures


def bench(min_log2: int, max_log2: int, backends) -> list:
    from triton.testing import do_bench

    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for k in range(min_log2, max_log2 + 1, 2):
            n = 1 << k
            t = torch.empty(n, dtype=dtype, device="cuda")
            ms = {"fill_": do_bench(lambda: t.fill_(1.5), return_mode="median"),
                  "torch normal_": do_bench(lambda: t.normal_(0.0, 0.02), return_mode="median")}
            for b in backends:
                ms[f"fusedinit {b}"] = do_bench(
                    lambda b=b: fusedinit.normal_(t, 0.0, 0.02, seed=1, backend=b),
                    return_mode="median")
            gbps = {name: n * t.element_size() / (v * 1e-3) / 1e9 for name, v in ms.items()}
            rows.append({"dtype": str(dtype).replace("torch.", ""), "log2_n": k, "ms": ms,
                         "GBps": gbps})
            del t
    torch.cuda.empty_cache()
    return rows


def print_table(rows, backends) -> None:
    head = ["dtype", "n", "fill_ GB/s", "torch normal_ GB/s"]
    for b in backends:
        head += [f"{b} GB/s", f"{b} % of fill_", f"{b} x normal_"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        g = r["GBps"]
        cells = [r["dtype"], f"2^{r['log2_n']}", f"{g['fill_']:.0f}", f"{g['torch normal_']:.0f}"]
        for b in backends:
            v = g[f"fusedinit {b}"]
            cells += [f"{v:.0f}", f"{100 * v / g['fill_']:.0f}%", f"{v / g['torch normal_']:.1f}x"]
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-log2", type=int, default=24)
    parser.add_argument("--max-log2", type=int, default=30)
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-check", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU", file=sys.stderr)
        return 2
    backends = [b for b in ("cuda", "triton") if b in fusedinit.available_backends()]
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"backends {backends}", flush=True)
    start = time.time()
    failures = [] if args.skip_check else cross_check(args.max_log2, backends)
    print(f"cross-check: {len(failures)} mismatches ({time.time() - start:.0f} s)", flush=True)
    rows = bench(args.min_log2, args.max_log2, backends)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "failures": failures, "rows": rows}, f, indent=1)
    print_table(rows, backends)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
