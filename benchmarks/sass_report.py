"""Static cost report of fusedinit's GPU kernels, without a GPU.

Compiles the CUDA kernel (nvcc) and the Triton kernel (triton.compile) for sm_90, disassembles
them (nvdisasm from Triton's package), and prints per kernel and dtype: registers, spills,
the widest store, SASS instructions per output element on the hot path, and the issue-bound
throughput that implies on an H200 next to its write roofline. It also scans the PTX of the
full kernels (every distribution and dtype) and fails on anything that would break bit
exactness: approximate ops (.approx), flush-to-zero (.ftz) or fused multiply-adds other than
the contract's own (tools/ptx_exactness.py: each of those is an inline-asm fma.rn.f32).

Hot path: the CUDA kernel's 16-byte store loop is built alone (benchmarks/sass_probe.cu:
normal, one dtype) and its shortest cycle through a 16-byte store is the common
iteration (no padding row, no tail). The per-chunk work (next chunk, its tensor, its
descriptor, the loop set-up) is the shortest path from that loop's exit back to its entry;
it is spread over the kChunk / kBlockThreads values a thread writes per chunk and counted
into the per-value figure. The Triton kernel has no loop: a program is the shortest path
from entry to exit through its 16-byte stores (a full block, no padding row), over the
elements one thread writes. Predicated-off instructions on that path count: they still issue.

Shared memory (CUDA): the normal table's loads are modelled per warp for the rows the words
actually select (TABLE_LOADS mirrors SharedTable in csrc/cuda/thread_body.h; the report
checks it against the loads in the hot loop). An LDS of 64 / 128 bits is served in 2 / 4
phases of 16 / 8 lanes; a phase needs as many 128-byte wavefronts as the most distinct
32-bit words any one bank holds (lanes reading the same word share it). An SM serves one
wavefront per cycle and issues 4 warp-instructions per cycle, so the table stays off the
critical path while wavefronts per value < instructions per value / 128.

    python benchmarks/sass_report.py [--json] [--arch 90] [--only cuda|triton]
"""
from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

# H200 (sm_90): 132 SMs x 4 schedulers x 1.98 GHz x 32 lanes.
THREAD_INSTRUCTIONS_PER_S = 132 * 4 * 1.98e9 * 32
WRITE_BANDWIDTH = 4.3e12  # bytes/s, the write roofline
DTYPES = {"float32": (0, 4), "bfloat16": (2, 2)}  # name -> (Store code, bytes per element)
NORMAL = 0

# SharedTable (csrc/cuda/thread_body.h): one (byte offset of row 0, row stride, bytes loaded)
# per shared-memory load a normal value makes (four 8-byte loads of its scaled row).
TABLE_LOADS = [(0, 8, 8), (512, 8, 8), (1024, 8, 8), (1536, 8, 8)]
# Row-major 32-byte rows read with two 16-byte loads, for the comparison in the report.
TABLE_LOADS_ROW_MAJOR = [(0, 32, 16), (16, 32, 16)]

_INSTR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def _tool(name: str) -> str:
    try:
        import triton
        path = pathlib.Path(triton.__file__).parent / "backends/nvidia/bin" / name
        if path.exists():
            return str(path)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"sass_report: {name} not found (install triton or the CUDA toolkit)")
    return found


# ---- SASS parsing and the hot path ---------------------------------------------------------
class Sass:
    """Instructions of one kernel's SASS with its control-flow graph (one node per instruction)."""

    def __init__(self, text: str):
        self.ops = []          # (predicate, opcode with modifiers, full text)
        labels = {}
        for line in text.splitlines():
            m = _LABEL.match(line.strip())
            if m:
                labels[m.group(1)] = len(self.ops)
                continue
            m = _INSTR.match(line)
            if m:
                body = m.group(2).strip()
                pred = ""
                if body.startswith("@"):
                    pred, body = body.split(None, 1)
                self.ops.append((pred, body.split()[0], body))
        self.succ = []
        for i, (pred, op, body) in enumerate(self.ops):
            nxt = [i + 1] if i + 1 < len(self.ops) else []
            base = op.split(".")[0]
            if base in ("BRA", "JMP"):
                target = _TARGET.search(body)
                to = [labels[target.group(1)]] if target else []
                self.succ.append(to + (nxt if pred else []))
            elif base in ("EXIT", "RET"):
                self.succ.append(nxt if pred else [])
            else:
                self.succ.append(nxt)

    @staticmethod
    def _bfs(start: int, edges) -> list:
        """Edges walked from `start` to each reachable node (unit weights)."""
        inf = float("inf")
        dist = [inf] * len(edges)
        dist[start] = 0
        queue = collections.deque([start])
        while queue:
            i = queue.popleft()
            for j in edges[i]:
                if dist[j] == inf:
                    dist[j] = dist[i] + 1
                    queue.append(j)
        return dist

    def _dist(self, start: int) -> list:
        """Instructions issued from `start` (inclusive) to each reachable node (exclusive)."""
        return self._bfs(start, self.succ)

    def _reverse_dist(self, end: int) -> list:
        """Instructions from each node to `end`."""
        pred = [[] for _ in self.succ]
        for i, succ in enumerate(self.succ):
            for j in succ:
                pred[j].append(i)
        return self._bfs(end, pred)

    def path(self, start: int, end: int) -> list:
        """One shortest instruction path from start to end (both included)."""
        dist_from_end_rev = self._reverse_dist(end)
        path, i = [start], start
        while i != end:
            i = min(self.succ[i], key=lambda j: dist_from_end_rev[j])
            path.append(i)
        return path

    def stores(self, width: str = "128"):
        return [i for i, (_, op, _) in enumerate(self.ops)
                if op.split(".")[0] in ("STG", "ST") and op.endswith("." + width)]

    def hot_loop(self):
        """The cycle through a 16-byte store with the fewest instructions per 16-byte store
        (an unrolled loop stores more than once an iteration): one loop iteration."""
        best, best_cost = None, float("inf")
        stores = set(self.stores())
        for s in stores:
            back = self._reverse_dist(s)
            for j in self.succ[s]:
                if back[j] != float("inf"):
                    cycle = self.path(j, s)
                    cost = len(cycle) / len(stores.intersection(cycle))
                    if cost < best_cost:
                        best, best_cost = cycle, cost
        return best

    def loop_overhead(self, loop) -> int:
        """Instructions from leaving `loop` to entering it again (the enclosing loop's work):
        the shortest path from a successor of the loop outside it to a loop node that has a
        predecessor outside it, not passing through the loop."""
        inside = set(loop)
        preds = collections.defaultdict(list)
        for i, succ in enumerate(self.succ):
            for j in succ:
                preds[j].append(i)
        entries = {i for i in inside if any(p not in inside for p in preds[i])}
        exits = {j for i in inside for j in self.succ[i] if j not in inside}
        outside = [[j for j in succ if j not in inside or j in entries] if i not in inside else []
                   for i, succ in enumerate(self.succ)]
        best = float("inf")
        for start in exits:
            dist = self._bfs(start, outside)
            best = min([best] + [dist[e] for e in entries])
        if best == float("inf"):
            raise SystemExit("sass_report: the hot loop is never re-entered (no chunk loop?)")
        return int(best)

    def hot_program(self):
        """Shortest entry -> exit path through a 16-byte store."""
        exits = [i for i, (_, op, _) in enumerate(self.ops) if op.split(".")[0] == "EXIT"]
        from_entry = self._dist(0)
        best = None
        for s in self.stores():
            if from_entry[s] == float("inf"):
                continue
            to_exit = self._dist(s)
            e = min(exits, key=lambda x: to_exit[x])
            if to_exit[e] == float("inf"):
                continue
            candidate = self.path(0, s)[:-1] + self.path(s, e)
            if best is None or len(candidate) < len(best):
                best = candidate
        return best

    def mix(self, nodes) -> collections.Counter:
        return collections.Counter(self.ops[i][1].split(".")[0] for i in nodes)


def _store_width(sass: Sass, nodes) -> int:
    widths = [int(m.group(1)) // 8 if (m := re.search(r"\.(64|128)$", sass.ops[i][1])) else 4
              for i in nodes if sass.ops[i][1].split(".")[0] in ("STG", "ST")]
    return max(widths, default=0)


def _resources(cubin: pathlib.Path) -> dict:
    out = subprocess.run([_tool("cuobjdump"), "-res-usage", str(cubin)], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    return {"registers": int(m.group(1)), "stack": int(m.group(2)), "local": int(m.group(4))}


def _disassemble(cubin: pathlib.Path) -> Sass:
    text = subprocess.run([_tool("nvdisasm"), "-c", str(cubin)], check=True, capture_output=True,
                          text=True).stdout
    return Sass(text)


# ---- the two kernels ---------------------------------------------------------------------
def _nvcc(out: pathlib.Path, arch: int, defines=(), ptx=False, capacity=1) -> str:
    """Compiles init_kernel_<capacity>.cu, or with `defines` the one-loop probe
    (benchmarks/sass_probe.cu)."""
    source = (pathlib.Path(__file__).with_name("sass_probe.cu") if defines
              else ROOT / f"csrc/cuda/init_kernel_{capacity}.cu")
    cmd = ["nvcc", "-std=c++17", "-O3", "--fmad=false", f"-arch=sm_{arch}", f"-I{ROOT / 'csrc'}",
           "-ptx" if ptx else "-cubin", "-Xptxas=-v", str(source),
           "-o", str(out)] + [f"-D{d}" for d in defines]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600).stderr


def _spill_bytes(log: str) -> int:
    """Spill stores of the file's kernel (the largest figure, should ptxas report more than
    one entry)."""
    return max((int(x) for x in re.findall(r"(\d+) bytes spill stores", log)), default=0)


def cuda_report(arch: int, tmp: pathlib.Path) -> dict:
    rows = {}
    for name, (store, esize) in DTYPES.items():
        cubin = tmp / f"cuda_{name}.cubin"
        log = _nvcc(cubin, arch, [f"PROBE_KIND={NORMAL}", f"PROBE_STORE={store}"])
        sass = _disassemble(cubin)
        loop = sass.hot_loop()
        if loop is None:
            raise SystemExit(f"sass_report: no 16-byte store loop in the CUDA {name} kernel")
        elements = len([i for i in loop if i in set(sass.stores())]) * 16 // esize
        spills = _spill_bytes(log)
        chunk_values = _layout_constant("kChunk") // _layout_constant("kBlockThreads")
        overhead = sass.loop_overhead(loop)
        row = _row(sass, loop, elements, esize, _resources(cubin), spills,
                   extra=overhead / chunk_values)
        row["chunk_overhead"] = f"{overhead} per {chunk_values} values"
        _check_table_loads(sass, loop, elements)
        row["wavefronts"] = round(table_wavefronts(TABLE_LOADS), 3)
        rows[name] = row
    # The full kernel (every distribution and dtype; the largest descriptor block): registers,
    # spills and the PTX scan.
    full = tmp / "cuda_full.cubin"
    log = _nvcc(full, arch, capacity=128)
    ptx = tmp / "cuda_full.ptx"
    _nvcc(ptx, arch, ptx=True, capacity=128)
    return {"rows": rows, "full": dict(_resources(full),
                                       spills=_spill_bytes(log)),
            "ptx_violations": _scan_ptx(ptx.read_text())}


def triton_report(arch: int, tmp: pathlib.Path) -> dict:
    import torch
    from fusedinit.triton.aot import compile_kernel
    from fusedinit.triton.launch import BLOCK, NUM_WARPS

    rows = {}
    for name, (_, esize) in DTYPES.items():
        kernel = compile_kernel(getattr(torch, name), arch=arch, only_kind=NORMAL)
        cubin = tmp / f"triton_{name}.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        sass = _disassemble(cubin)
        program = sass.hot_program()
        if program is None:
            raise SystemExit(f"sass_report: no 16-byte store in the Triton {name} kernel")
        elements = BLOCK // (NUM_WARPS * 32)
        res = _resources(cubin)
        rows[name] = _row(sass, program, elements, esize, res, res["local"])
    violations = []
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        for layout in ("aligned", "contiguous", "strided"):
            for index_aligned, has_runs in ((True, False), (False, False), (True, True),
                                            (False, True)):
                kernel = compile_kernel(dtype, arch=arch, layout=layout,
                                        index_aligned=index_aligned, has_runs=has_runs)
                violations += [f"{dtype} {layout} index_aligned={index_aligned} runs={has_runs}: "
                               f"{v}" for v in _scan_ptx(kernel.asm["ptx"])]
    return {"rows": rows, "ptx_violations": violations}


def _layout_constant(name: str) -> int:
    """An integer constexpr of csrc/cuda/launch_layout.h."""
    text = (ROOT / "csrc/cuda/launch_layout.h").read_text()
    m = re.search(rf"\b{name}\s*=\s*(\d+)", text)
    if m is None:
        raise SystemExit(f"sass_report: {name} not found in launch_layout.h")
    return int(m.group(1))


def _check_table_loads(sass: Sass, loop, elements: int) -> None:
    """The hot loop's shared loads per value must be the ones TABLE_LOADS models."""
    widths = collections.Counter()
    for i in loop:
        op = sass.ops[i][1]
        if op.split(".")[0] == "LDS":
            m = re.search(r"\.(64|128)$", op)
            widths[int(m.group(1)) // 8 if m else 4] += 1
    modelled = collections.Counter(width for _, _, width in TABLE_LOADS)
    if widths != collections.Counter({w: n * elements for w, n in modelled.items()}):
        raise SystemExit(f"sass_report: the hot loop's shared loads {dict(widths)} for {elements} "
                         f"values do not match TABLE_LOADS {TABLE_LOADS}: update the model")


def table_rows(words):
    """The normal-table row each 32-bit word selects (rng_math.h normal_word / quantile_arg):
    2 * octave + the top mantissa bit of k = 2 * (w mod 2^31) + 1."""
    import numpy as np

    k = ((words.astype(np.uint64) << np.uint64(1)) | np.uint64(1)) & np.uint64(0xFFFFFFFF)
    octave = np.zeros(k.shape, dtype=np.int64)
    for shift in (16, 8, 4, 2, 1):  # floor(log2 k), exactly
        big = (k >> (octave + shift).astype(np.uint64)) != 0
        octave = np.where(big, octave + shift, octave)
    top_mantissa = (k >> np.maximum(octave - 1, 0).astype(np.uint64)) & np.uint64(1)
    top_mantissa = np.where(octave == 0, 0, top_mantissa.astype(np.int64))
    return 2 * octave + top_mantissa


def table_wavefronts(loads, warps: int = 20000, seed: int = 0) -> float:
    """Modelled shared-memory wavefronts per value of the table loads `loads` (see the module
    docstring), averaged over `warps` warps of uniform words."""
    import numpy as np

    rows = table_rows(np.random.default_rng(seed).integers(0, 1 << 32, size=(warps, 32),
                                                           dtype=np.uint64))
    total = 0.0
    for base, stride, width in loads:
        lanes = 128 // width if width > 4 else 32  # lanes per phase
        words = (base + rows[..., None] * stride) // 4 + np.arange(width // 4)  # warps x 32 x w
        for phase in range(0, 32, lanes):
            part = words[:, phase:phase + lanes].reshape(warps, -1)
            part = np.sort(part, axis=1)
            distinct = np.concatenate([np.ones((warps, 1), bool), part[:, 1:] != part[:, :-1]], 1)
            banks = np.where(distinct, part % 32, 32)  # repeated words: an ignored bank 32
            counts = np.stack([(banks == b).sum(1) for b in range(32)], 1)
            total += counts.max(1).mean()
    return total / 32


def _row(sass: Sass, nodes, elements: int, esize: int, res: dict, spills: int,
         extra: float = 0.0) -> dict:
    per_element = len(nodes) / elements + extra
    elements_per_s = THREAD_INSTRUCTIONS_PER_S / per_element
    return {
        "registers": res["registers"], "spills": spills + res["local"],
        "store_bytes": _store_width(sass, nodes), "hot_instructions": len(nodes),
        "elements": elements, "per_element": round(per_element, 2),
        "issue_bound_TBps": round(elements_per_s * esize / 1e12, 2),
        "budget_per_element": round(THREAD_INSTRUCTIONS_PER_S / (WRITE_BANDWIDTH / esize), 1),
        "mix": dict(sass.mix(nodes).most_common(8)),
    }


def _scan_ptx(ptx: str) -> list:
    """Lines of PTX with an approximate or flush-to-zero op or a contracted fma; a kernel with
    none of the contract's fma blocks means the scan no longer recognises them."""
    if str(ROOT / "tools") not in sys.path:  # a dev tool beside the package, not in it
        sys.path.insert(0, str(ROOT / "tools"))
    from ptx_exactness import inexact_ops, split_contract_fma

    bad = inexact_ops(ptx)
    if split_contract_fma(ptx)[0] == 0:
        bad.append("no contract fma block found: the scan does not recognise them")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true",
                        help='print {"cuda": {"float32": N, "bfloat16": N}, "triton": {...}, '
                             '"cuda_smem_wavefronts": {...}} (SASS instructions and modelled '
                             "shared-memory wavefronts per element) and nothing else")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--check", action="store_true",
                        help="also fail (exit 2) on spills or stores narrower than 16 bytes")
    parser.add_argument("--only", choices=("cuda", "triton"),
                        help="compile and report one kernel (the JSON has only its key)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = {}
        if args.only != "triton":
            report["cuda"] = cuda_report(args.arch, pathlib.Path(tmp))
        if args.only != "cuda":
            report["triton"] = triton_report(args.arch, pathlib.Path(tmp))
    bad = [f"{k}: {v}" for k in report for v in report[k]["ptx_violations"]]
    if args.json:
        out = {k: {d: r["per_element"] for d, r in report[k]["rows"].items()} for k in report}
        if "cuda" in report:
            out["cuda_smem_wavefronts"] = {d: r["wavefronts"]
                                           for d, r in report["cuda"]["rows"].items()}
        print(json.dumps(out))
    else:
        _print_table(report, args.arch)
    if bad:
        print("PTX with inexact float ops (breaks bit-exactness):", *bad[:20], sep="\n  ",
              file=sys.stderr)
        return 1
    weak = [f"{k} {d}: {r['spills']} bytes spilled, {r['store_bytes']}-byte stores"
            for k in report for d, r in report[k]["rows"].items()
            if r["spills"] or r["store_bytes"] < 16]
    if args.check and weak:
        print("hot paths with spills or narrow stores:", *weak, sep="\n  ", file=sys.stderr)
        return 2
    return 0


def _print_table(report: dict, arch: int) -> None:
    print(f"sm_{arch}: SASS instructions per output element on the hot path "
          f"(H200 issue rate {THREAD_INSTRUCTIONS_PER_S / 1e12:.1f}e12 thread-instr/s, "
          f"write roofline {WRITE_BANDWIDTH / 1e12:.1f} TB/s)\n")
    head = ("kernel", "dtype", "regs", "spills", "store B", "instr/elem", "smem wavefronts/elem",
            "budget", "issue-bound TB/s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for kernel, data in report.items():
        for dtype, r in data["rows"].items():
            print(f"| {kernel} | {dtype} | {r['registers']} | {r['spills']} | {r['store_bytes']} | "
                  f"{r['per_element']} ({r['hot_instructions']}/{r['elements']}"
                  f"{' + ' + r['chunk_overhead'] if 'chunk_overhead' in r else ''}) | "
                  f"{r.get('wavefronts', '-')} | {r['budget_per_element']} | "
                  f"{r['issue_bound_TBps']} |")
    print(f"\nShared-memory wavefronts per value stay off the critical path below instructions per "
          f"value / 128; the row-major 32-byte table would need "
          f"{table_wavefronts(TABLE_LOADS_ROW_MAJOR):.3f}.")
    print()
    for kernel, data in report.items():
        for dtype, r in data["rows"].items():
            mix = ", ".join(f"{op} {n}" for op, n in r["mix"].items())
            print(f"{kernel} {dtype} hot-path mix: {mix}")
    if "cuda" in report:
        full = report["cuda"]["full"]
        print(f"\nCUDA full kernel: {full['registers']} registers, {full['spills']} bytes spilled")
    for kernel, data in report.items():
        print(f"{kernel} PTX scan (.approx / .ftz / contracted fma): "
              f"{len(data['ptx_violations'])} violations")


if __name__ == "__main__":
    sys.exit(main())
