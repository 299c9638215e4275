"""The longest functions of a Python package (lines from `def` to the last line of its body),
longest first: a check that no function has grown past what one reading holds.

    python tools/function_sizes.py [python/fusedinit] [--top 10] [--limit 80]

Exits 1 when a function is longer than --limit lines."""
from __future__ import annotations

import argparse
import ast
import pathlib
import sys
from typing import Iterator, Tuple


def functions(root: pathlib.Path) -> Iterator[Tuple[int, str]]:
    """(length in lines, "path:line name") of every function and method under `root`."""
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                yield node.end_lineno - start + 1, f"{path}:{node.lineno} {node.name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="python/fusedinit")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--limit", type=int, default=80)
    args = parser.parse_args()
    found = sorted(functions(pathlib.Path(args.root)), reverse=True)
    for length, where in found[:args.top]:
        print(f"{length:5d}  {where}")
    return 1 if found and found[0][0] > args.limit else 0


if __name__ == "__main__":
    sys.exit(main())
