"""On a GPU: cross-check CUDA == Triton == CPU bit for bit, then time fusedinit against torch's
normal_ and against fill_ (a non-zero value: the write roofline) with triton.testing.do_bench
(medians). Prints the table last; --json writes every number and --markdown the table's rows,
both rewritten after every check and every timing, so a run cut short (a timeout sends SIGINT)
still leaves what it measured.

--dry-run runs every step with tiny sizes on CPU tensors, the reference and the Triton
interpreter standing in for the GPU backends, so CI catches a broken step before a GPU run.

    python benchmarks/gpu_bench.py [--min-log2 24] [--max-log2 30] [--json results.json]
                                   [--markdown rows.md]
    python benchmarks/gpu_bench.py --dry-run
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch

import fusedinit

DISTRIBUTIONS = {
    "normal": fusedinit.Normal(0.0, 0.02, stream=7),
    "uniform": fusedinit.Uniform(-0.1, 0.1, stream=8),
    "trunc_normal": fusedinit.TruncNormal(0.0, 0.02, -0.04, 0.04, stream=9),
    "normal+padding": fusedinit.Normal(0.0, 0.02, padding_idx=3, stream=10),
}
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@dataclass
class Setup:
    device: str
    backends: List[str]               # fusedinit backends under test, first = the one timed first
    odd_shape: tuple                  # every dtype and distribution: an odd size, partial units
    check_log2: List[int]             # float32 / bfloat16 normal at 2^k (k >= 6)
    bench_log2: List[int]
    timer: Callable[[Callable[[], object]], float]  # median milliseconds of a call


@dataclass
class Report:
    """Everything measured so far, saved after each step (JSON and the Markdown table)."""
    device: str
    backends: List[str]
    json_path: Optional[str] = None
    markdown_path: Optional[str] = None
    checks: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    finished: bool = False

    def check(self, shape, dtype, name: str, ok: bool) -> None:
        self.checks.append({"shape": list(shape), "dtype": str(dtype), "distribution": name,
                            "ok": ok})
        if not ok:
            self.failures.append((list(shape), str(dtype), name))
        self.save()

    def timing(self, row: dict) -> None:
        self.rows.append(row)
        self.save()

    def save(self) -> None:
        if self.json_path:
            _write(self.json_path, json.dumps(
                {"device": self.device, "torch": torch.__version__, "backends": self.backends,
                 "finished": self.finished, "checks": len(self.checks),
                 "failures": self.failures, "rows": self.rows}, indent=1))
        if self.markdown_path:
            _write(self.markdown_path, "\n".join(table_lines(self.rows, self.backends)) + "\n")


def _write(path: str, text: str) -> None:
    # Whole or not at all: the process may be stopped at any moment.
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _shape(n: int) -> tuple:
    """2^k elements (k >= 6) as rows of at most 1024 and at least 8 rows: enough for every
    distribution's padding row."""
    cols = min(1024, n // 8)
    return (n // cols, cols)


def check_shapes(setup: Setup) -> None:
    """Every padding row fits every checked shape (a shape with too few rows is a bug here,
    not a mismatch)."""
    rows = [setup.odd_shape[0]] + [_shape(1 << k)[0] for k in setup.check_log2]
    for name, spec in DISTRIBUTIONS.items():
        if spec.padding_idx is not None and spec.padding_idx >= min(rows):
            raise ValueError(f"gpu_bench: {name} pads row {spec.padding_idx} but a checked shape "
                             f"has {min(rows)} rows")


def cross_check(setup: Setup, report: Report) -> None:
    """Every dtype and distribution at the odd shape (all backends and the CPU); float32 and
    bfloat16 normal at 2^k. Each result goes to `report`."""
    check_shapes(setup)
    cases = [(setup.odd_shape, dtype, name) for dtype in DTYPES for name in DISTRIBUTIONS]
    cases += [(_shape(1 << k), dtype, "normal") for k in setup.check_log2
              for dtype in (torch.float32, torch.bfloat16)]
    for shape, dtype, name in cases:
        spec = DISTRIBUTIONS[name]
        outs = {}
        for backend in setup.backends:
            t = torch.empty(shape, dtype=dtype, device=setup.device)
            fusedinit.init_many_([(t, spec)], seed=2024, backend=backend)
            outs[backend] = t
        cpu = fusedinit.init_many_([(torch.empty(shape, dtype=dtype), spec)], seed=2024,
                                   backend="cpu" if "cpu" in fusedinit.available_backends()
                                   else "reference")[0]
        first = setup.backends[0]
        ok = all(torch.equal(_bits(outs[b]), _bits(outs[first])) for b in setup.backends)
        ok = ok and torch.equal(_bits(outs[first].cpu()), _bits(cpu))
        status = "ok" if ok else "MISMATCH"
        print(f"check {tuple(shape)} {dtype} {name}: {'=='.join(setup.backends)}==cpu {status}",
              flush=True)
        report.check(shape, dtype, name, ok)
        del outs, cpu
    if setup.device == "cuda":
        torch.cuda.empty_cache()


def bench(setup: Setup, report: Report) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        for k in setup.bench_log2:
            n = 1 << k
            t = torch.empty(n, dtype=dtype, device=setup.device)
            ms = {"fill_": setup.timer(lambda: t.fill_(1.5)),
                  "torch normal_": setup.timer(lambda: t.normal_(0.0, 0.02))}
            for b in setup.backends:
                ms[f"fusedinit {b}"] = setup.timer(
                    lambda b=b: fusedinit.normal_(t, 0.0, 0.02, seed=1, backend=b))
            gbps = {name: n * t.element_size() / (v * 1e-3) / 1e9 for name, v in ms.items()}
            report.timing({"dtype": str(dtype).replace("torch.", ""), "log2_n": k, "ms": ms,
                           "GBps": gbps})
            print(f"bench {report.rows[-1]['dtype']} 2^{k}: " +
                  ", ".join(f"{name} {v:.3f} ms" for name, v in ms.items()), flush=True)
            del t
    if setup.device == "cuda":
        torch.cuda.empty_cache()


def table_lines(rows, backends) -> List[str]:
    head = ["dtype", "n", "fill_ GB/s", "torch normal_ GB/s"]
    for b in backends:
        head += [f"{b} GB/s", f"{b} % of fill_", f"{b} x normal_"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        g = r["GBps"]
        cells = [r["dtype"], f"2^{r['log2_n']}", f"{g['fill_']:.0f}", f"{g['torch normal_']:.0f}"]
        for b in backends:
            v = g[f"fusedinit {b}"]
            cells += [f"{v:.0f}", f"{100 * v / g['fill_']:.0f}%", f"{v / g['torch normal_']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cpu_timer(fn, reps: int = 3) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def gpu_setup(min_log2: int, max_log2: int, check_max_log2: int) -> Setup:
    from triton.testing import do_bench

    backends = [b for b in ("cuda", "triton") if b in fusedinit.available_backends()]
    if "cuda" in backends:
        from fusedinit.ops import cuda_arch
        if not cuda_arch.cuda_kernels_run_on(torch.device("cuda")):
            backends.remove("cuda")
    return Setup("cuda", backends, (1025, 1023), list(range(24, check_max_log2 + 1, 2)),
                 list(range(min_log2, max_log2 + 1, 2)),
                 lambda fn: do_bench(fn, return_mode="median"))


def dry_run_setup() -> Setup:
    """CPU tensors and tiny sizes; the Triton interpreter when TRITON_INTERPRET=1 is set."""
    backends = ["reference"]
    if os.environ.get("TRITON_INTERPRET") == "1" and "triton" in fusedinit.available_backends():
        backends.append("triton")
    if "cpu" in fusedinit.available_backends():
        backends.insert(0, "cpu")
    return Setup("cpu", backends, (9, 37), [10, 12], [10, 12], _cpu_timer)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-log2", type=int, default=24)
    parser.add_argument("--max-log2", type=int, default=30)
    parser.add_argument("--check-max-log2", type=int, default=30,
                        help="largest 2^k of the float32 / bfloat16 normal cross-check")
    parser.add_argument("--json", default=None, help="every number, rewritten as it comes")
    parser.add_argument("--markdown", default=None,
                        help="the table's Markdown rows, rewritten as they come")
    parser.add_argument("--skip-check", action="store_true")
    parser.add_argument("--dry-run", action="store_true",
                        help="every step on CPU tensors with tiny sizes (reference, CPU kernel "
                             "and, under TRITON_INTERPRET=1, the Triton interpreter)")
    args = parser.parse_args(argv)
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            parser.error(f"{flag}: folder of {path!r} does not exist")
    if args.dry_run:
        setup = dry_run_setup()
        device_name = "cpu (dry run)"
    else:
        if not torch.cuda.is_available():
            print("gpu_bench: no CUDA GPU (--dry-run runs the steps on the CPU)", file=sys.stderr)
            return 2
        setup = gpu_setup(args.min_log2, args.max_log2, args.check_max_log2)
        device_name = torch.cuda.get_device_name()
    print(f"device {device_name}, torch {torch.__version__}, backends {setup.backends}",
          flush=True)
    check_shapes(setup)  # before anything runs: a bad shape must not cost a GPU session
    report = Report(device_name, setup.backends, args.json, args.markdown)
    report.save()
    start = time.time()
    try:
        if not args.skip_check:
            cross_check(setup, report)
        print(f"cross-check: {len(report.failures)} mismatches ({time.time() - start:.0f} s)",
              flush=True)
        bench(setup, report)
        report.finished = True
    except KeyboardInterrupt:  # timeout -s INT: keep what was measured
        print(f"gpu_bench: interrupted after {len(report.checks)} checks and "
              f"{len(report.rows)} timings", flush=True)
    report.save()
    print("\n".join(table_lines(report.rows, setup.backends)))
    if report.failures:
        return 1
    return 0 if report.finished else 130


if __name__ == "__main__":
    sys.exit(main())
