"""What in a kernel's PTX would break the contract's bit exactness (docs/rng.md section 2).

Forbidden: approximate ops (.approx), flush-to-zero (.ftz) and fused multiply-adds the
compiler made by contracting a multiply and an add. The contract's own fma (rng_math.h
fma_rn, triton/kernel.py _fma) is emitted as inline PTX, so each one sits alone in an
inline-asm block; an fma anywhere else is a contraction."""
from __future__ import annotations

import re
from typing import List, Tuple

_ASM_BLOCK = re.compile(r"// begin inline asm\n(.*?)// end inline asm", re.S)
_CONTRACT_FMA = re.compile(r"^\s*fma\.rn\.f32\s+%\w+,\s*%\w+,\s*%\w+,\s*%\w+;\s*$")
_FORBIDDEN = re.compile(r"\.approx|\.ftz|\bfma\.")


def _instructions(block: str) -> List[str]:
    """The instruction lines of a PTX fragment (no debug .loc lines, comments or blanks)."""
    lines = (line.split("//")[0].strip() for line in block.splitlines())
    return [line for line in lines if line and not line.startswith(".loc")]


def split_contract_fma(ptx: str) -> Tuple[int, str]:
    """(number of the contract's fma blocks, the PTX with those blocks removed)."""
    count = 0

    def drop(match: "re.Match[str]") -> str:
        nonlocal count
        body = _instructions(match.group(1))
        if len(body) == 1 and _CONTRACT_FMA.match(body[0]):
            count += 1
            return ""
        return match.group(0)

    rest = _ASM_BLOCK.sub(drop, ptx)
    return count, rest


def inexact_ops(ptx: str) -> List[str]:
    """PTX lines that break bit exactness: .approx, .ftz, or an fma that is not the contract's."""
    _, rest = split_contract_fma(ptx)
    return [line.strip() for line in rest.splitlines()
            if _FORBIDDEN.search(line.split("//")[0])]
