"""Regenerate docs/rng_vectors.json (the contract's test vectors) from the reference.
The file carries the contract version (docs/rng.md "Version"): a change to any value needs a
new version. tests/test_vectors.py checks every backend against it and that docs/rng.md shows
the same numbers (this script rewrites that table too)."""
import json
import math
import pathlib
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
from fusedinit import reference  # noqa: E402
from fusedinit.ops.specs import TruncNormal  # noqa: E402


def _trunc(mean, std, a, b, dtype):
    return dict(name=f"trunc_normal({mean},{std},{a},{b}) {dtype}", kind=2,
                params=TruncNormal(mean, std, a, b).params(), dtype=dtype, spec=[mean, std, a, b])


# The cases with a non-zero mean pin the last step, fma(std, z, mean), in each dtype; they were
# added after the others (contract version 1 unchanged), in between them so that every earlier
# entry of the json stays as it was, byte for byte. In the float32 ones std * z and mean are of
# a size, so that rounding std * z first (no fma) changes about a third of the values; 16-bit
# rounding hides that (it would take a float32 value on a 16-bit tie). trunc_normal(-0.1, 0.6,
# -1, 1.5) has most of its mass above the mean: it is drawn mirrored (scale -std).
CASES = [
    dict(name="normal(0,1) float32", kind=0, params=[0.0, 1.0, 0, 0, 0, 0], dtype="float32"),
    dict(name="normal(0,0.02) bfloat16", kind=0, params=[0.0, 0.02, 0, 0, 0, 0], dtype="bfloat16"),
    dict(name="normal(-0.3,1.3) float32", kind=0, params=[-0.3, 1.3, 0, 0, 0, 0], dtype="float32"),
    dict(name="normal(-1.5,0.25) bfloat16", kind=0, params=[-1.5, 0.25, 0, 0, 0, 0],
         dtype="bfloat16"),
    dict(name="normal(0.25,0.02) float16", kind=0, params=[0.25, 0.02, 0, 0, 0, 0],
         dtype="float16"),
    dict(name="uniform[-1,1) float32", kind=1, params=[-1.0, 1.0, 0, 0, 0, 0], dtype="float32"),
    dict(name="uniform[0,1) float16", kind=1, params=[0.0, 1.0, 0, 0, 0, 0], dtype="float16"),
    _trunc(-0.1, 0.6, -1, 1.5, "float32"),
    _trunc(-1, 0.5, -2, -0.5, "bfloat16"),
    _trunc(0.25, 0.02, 0.2, 0.3, "float16"),
    dict(name="trunc_normal(0,1,-2,2) float32", kind=2, params=TruncNormal(0, 1, -2, 2).params(),
         dtype="float32", spec=[0, 1, -2, 2]),
    # Open sides (added last, contract version 1 unchanged: finite bounds give the values they
    # gave): a normal drawn as a truncated one, a half-normal above its mean (drawn mirrored),
    # and an open lower side. json writes the infinities as Infinity / -Infinity.
    _trunc(0, 1, -math.inf, math.inf, "float32"),
    _trunc(0.5, 2, 0.5, math.inf, "bfloat16"),
    _trunc(0, 0.02, -math.inf, 0.01, "float16"),
]
# The row of the docs/rng.md table that shows each case (seed 0, stream 0): the name with a
# space after each comma.
DOC_ROWS = {case["name"]: case["name"].replace(",", ", ") for case in CASES}
KEYS = [(0, 0), (0x0123456789ABCDEF, 0xFEDCBA9876543210), (2**64 - 1, 2**64 - 1)]
INDICES = [0, 1, 2, 3, 4, 5, 2**31 + 1, 2**40 + 3]


def main():
    out = []
    for seed, stream in KEYS:
        idx = torch.tensor(INDICES, dtype=torch.int64)
        words = reference.stream_words(idx, seed, stream).tolist()
        entry = dict(seed=f"0x{seed:016x}", stream=f"0x{stream:016x}", indices=INDICES,
                     words=[f"{w:08x}" for w in words], values={})
        for case in CASES:
            dtype = getattr(torch, case["dtype"])
            v = reference.values_at(idx, kind=case["kind"], params=case["params"], seed=seed,
                                    stream=stream, dtype=dtype)
            width = v.element_size() * 2
            raw = v.view({2: torch.int16, 4: torch.int32}[v.element_size()]).to(torch.int64)
            raw = raw & ((1 << (8 * v.element_size())) - 1)
            entry["values"][case["name"]] = dict(kind=case["kind"], params=case["params"],
                                                 spec=case.get("spec", case["params"][:2]),
                                                 dtype=case["dtype"],
                                                 bits=[f"{int(b):0{width}x}" for b in raw],
                                                 decimal=[float(x) for x in v.float()])
        out.append(entry)
    doc = {"contract_version": reference.CONTRACT_VERSION, "vectors": out}
    (ROOT / "docs/rng_vectors.json").write_text(json.dumps(doc, indent=1) + "\n")
    doc = ROOT / "docs/rng.md"
    lines = doc.read_text().split("\n")
    rows = {"words": out[0]["words"]}
    rows.update({DOC_ROWS[name]: val["bits"] for name, val in out[0]["values"].items()})
    at = None  # the row of the previous label: a missing row goes right after it
    for label, bits in rows.items():
        row = f"| {label} | {' '.join(bits)} |"
        found = [i for i, line in enumerate(lines) if line.startswith(f"| {label} | ")]
        if found:
            at = found[0]
            lines[at] = row
        else:
            at += 1
            lines.insert(at, row)
    doc.write_text("\n".join(lines))
    for e in out:
        print(f"seed {e['seed']} stream {e['stream']}: words " + " ".join(e["words"]))
        for name, val in e["values"].items():
            print(f"  {name}: " + " ".join(val["bits"]))


if __name__ == "__main__":
    main()
