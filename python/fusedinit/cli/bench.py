"""`python -m fusedinit bench` / `fusedinit-bench`: fusedinit against torch's own init ops,
side by side in one run, with a write-bandwidth roofline (a non-zero fill_) measured in the
same run. Prints a table and writes JSON and a PNG plot into the results folder."""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import sys
from pathlib import Path

import torch
from tqdm import tqdm

import fusedinit
import fusedinit.testing

from . import errors


class _NoCudaRuntimeNote(logging.Filter):
    """Drops cpp_extension's "No CUDA runtime is found, using CUDA_HOME=..." record: importing
    torch.utils.benchmark imports cpp_extension, which logs it on every GPU-less machine with an
    nvcc on PATH. It says nothing about the benchmark and would be the first line a user reads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


def _import_benchmark():
    logger = logging.getLogger("torch.utils.cpp_extension")
    note = _NoCudaRuntimeNote()
    logger.addFilter(note)
    try:
        from torch.utils import benchmark
    finally:
        logger.removeFilter(note)
    return benchmark


benchmark = _import_benchmark()

OPS = {
    "normal": (lambda t: t.normal_(0.0, 0.02), lambda t: fusedinit.normal_(t, 0.0, 0.02, seed=1)),
    "uniform": (lambda t: t.uniform_(-0.02, 0.02),
                lambda t: fusedinit.uniform_(t, -0.02, 0.02, seed=1)),
    "trunc_normal": (lambda t: torch.nn.init.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04),
                     lambda t: fusedinit.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04, seed=1)),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_LOG2_SIZE = 40


def log2_sizes(text: str) -> list[int]:
    """Comma-separated log2 sizes, each in [0, MAX_LOG2_SIZE]."""
    sizes = []
    for part in text.split(","):
        try:
            k = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a log2 size: {part!r} (e.g. 20,24)") from None
        if not 0 <= k <= MAX_LOG2_SIZE:
            raise argparse.ArgumentTypeError(
                f"log2 size {k} out of range [0, {MAX_LOG2_SIZE}]")
        sizes.append(k)
    return sizes


def parse_args(argv=None, prog: str = "fusedinit-bench"):
    p = errors.Parser(prog=prog, description=__doc__)
    p.add_argument("--device", type=errors.device, default=None,
                   help="cpu or cuda (default: cuda if available)")
    p.add_argument("--sizes", type=log2_sizes, default=None,
                   help="comma-separated log2 sizes (default: 20,22,24,26 on CPU, 24,26,28,30 on GPU)")
    p.add_argument("--dtypes", type=errors.choice_list(DTYPES), default="float32,bfloat16,float16")
    p.add_argument("--ops", type=errors.choice_list(OPS), default="normal,uniform,trunc_normal")
    p.add_argument("--threads", type=errors.positive_int, default=None,
                   help="CPU threads (default: torch's)")
    p.add_argument("--min-run-time", type=errors.positive_seconds, default=0.3,
                   help="seconds per measurement")
    p.add_argument("--out", default="results", help="folder for the JSON and PNG")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    try:  # before minutes of timing, not after
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"argument --out: cannot create folder {args.out!r}: {exc.strerror or exc}")
    return args


def _timer(fn, t, threads, min_run_time):
    timer = benchmark.Timer("fn(t)", globals={"fn": fn, "t": t}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median


class BenchError(Exception):
    """A run that cannot go on (not a bug): main prints it as one line."""


def _allocate(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    try:
        return torch.empty(n, dtype=dtype, device=device)
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BenchError(f"cannot allocate 2^{n.bit_length() - 1} {str(dtype)[6:]} elements on "
                         f"{device}: {detail}") from None


def _fill_roofline(t):
    t.fill_(1.5)  # non-zero: zero fills take a faster path on this hardware


def run(args):
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    threads = args.threads or torch.get_num_threads()
    default_sizes = [24, 26, 28, 30] if device.type == "cuda" else [20, 22, 24, 26]
    sizes = [1 << k for k in (args.sizes or default_sizes)]
    dtypes = [DTYPES[d] for d in args.dtypes]
    ops = args.ops
    rows = []
    todo = [(d, n) for d in dtypes for n in sizes]
    with tqdm(total=len(todo) * (1 + 2 * len(ops)), desc="fusedinit bench", unit="timing") as bar:
        for dtype, n in todo:
            t = _allocate(n, dtype, device)
            roof = _timer(_fill_roofline, t, threads, args.min_run_time)
            bar.update()
            for op in ops:
                torch_fn, fused_fn = OPS[op]
                t_torch = _timer(torch_fn, t, threads, args.min_run_time)
                bar.update()
                t_fused = _timer(fused_fn, t, threads, args.min_run_time)
                bar.update()
                nbytes = n * t.element_size()
                rows.append(dict(op=op, dtype=str(dtype).replace("torch.", ""), n=n,
                                 torch_eps=n / t_torch, fused_eps=n / t_fused,
                                 roofline_eps=n / roof, fused_gbps=nbytes / t_fused / 1e9,
                                 roofline_gbps=nbytes / roof / 1e9,
                                 pct_roofline=100.0 * roof / t_fused, speedup=t_torch / t_fused))
            del t
    return dict(device=str(device), threads=threads, torch=torch.__version__,
                backends=fusedinit.available_backends(), cuda_skipped=_cuda_skipped(),
                cpu_isa=fusedinit.testing.cpu_isa() if fusedinit.HAS_EXTENSION else None,
                machine=platform.machine(), processor=platform.processor(),
                date=datetime.datetime.now().isoformat(timespec="seconds"), rows=rows)


def _cuda_skipped() -> str | None:
    """Why this build has no CUDA kernels although torch has CUDA (recorded by setup.py)."""
    try:
        from .._build_info import CUDA_SKIPPED
    except ImportError:  # not built by setup.py (e.g. a source tree on PYTHONPATH)
        return None
    return CUDA_SKIPPED


def format_table(result) -> str:
    head = (f"device {result['device']}, {result['threads']} thread(s), torch {result['torch']}, "
            f"cpu kernels: {result['cpu_isa']}, backends: {', '.join(result['backends'])}\n")
    if result.get("cuda_skipped"):
        head += (f"(this build has no CUDA kernels: {result['cuda_skipped']}; CUDA tensors use "
                 "Triton - see the README to build them)\n")
    cols = "| op | dtype | n | torch M/s | fusedinit M/s | fusedinit GB/s | fill_ GB/s | % of roofline | speedup |"
    lines = [head, cols, "|" + "---|" * 9]
    for r in result["rows"]:
        lines.append(f"| {r['op']} | {r['dtype']} | 2^{r['n'].bit_length() - 1} | "
                     f"{r['torch_eps'] / 1e6:,.0f} | {r['fused_eps'] / 1e6:,.0f} | "
                     f"{r['fused_gbps']:.2f} | {r['roofline_gbps']:.1f} | "
                     f"{r['pct_roofline']:.0f}% | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def plot(result, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = sorted({r["op"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(ops), figsize=(5 * len(ops), 4), squeeze=False)
    for ax, op in zip(axes[0], ops):
        for dtype in sorted({r["dtype"] for r in result["rows"]}):
            rs = [r for r in result["rows"] if r["op"] == op and r["dtype"] == dtype]
            n = [r["n"] for r in rs]
            line, = ax.plot(n, [r["fused_eps"] / 1e6 for r in rs], "o-", label=f"fusedinit {dtype}")
            ax.plot(n, [r["torch_eps"] / 1e6 for r in rs], "x--", color=line.get_color(),
                    label=f"torch {dtype}")
            ax.plot(n, [r["roofline_eps"] / 1e6 for r in rs], ":", color=line.get_color(),
                    alpha=0.5, label=f"fill_ {dtype}")
        ax.set(xscale="log", yscale="log", xlabel="elements", ylabel="M elements/s", title=op)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"fusedinit vs torch on {result['device']} ({result['threads']} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None, prog: str = "fusedinit-bench"):
    args = parse_args(argv, prog)
    try:
        result = run(args)
    except BenchError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = out / f"bench-{result['device']}-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2))
    print(format_table(result))
    print(f"\nwrote {json_path}")
    if not args.no_plot:
        png = out / f"bench-{result['device']}-{stamp}.png"
        plot(result, png)
        print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
