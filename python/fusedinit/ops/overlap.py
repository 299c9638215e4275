"""Memory-sharing checks run before anything is written: within one tensor (an expanded or
unfolded view) and across the tensors of one call (the same tensor twice, overlapping views).
Either would make the in-place writes race. The op repeats the first check in C++ (op_args.h),
where it is the only one under torch.compile."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

_NO, _YES, _TOO_HARD = 0, 1, 2  # torch._debug_has_internal_overlap's answers


def _byte_offsets(t: torch.Tensor) -> torch.Tensor:
    """Byte offset (from the data pointer) of every element, as an int64 tensor on the CPU."""
    offsets = torch.zeros((), dtype=torch.int64)
    for size, stride in zip(t.shape, t.stride()):
        if size != 1:
            step = torch.arange(size, dtype=torch.int64) * (stride * t.element_size())
            offsets = offsets.unsqueeze(-1) + step
    return offsets.reshape(-1)


def has_internal_overlap(t: torch.Tensor) -> bool:
    """Exact: torch's check answers "too hard" for most non-dense views (unfold, as_strided,
    t[:, ::2]), which must not be read as "no"."""
    quick = torch._debug_has_internal_overlap(t)
    if quick != _TOO_HARD:
        return quick == _YES
    dims = sorted((stride, size) for size, stride in zip(t.shape, t.stride()) if size > 1)
    if any(stride == 0 for stride, _ in dims):
        return True
    span = 0  # sufficient for "no": each dim steps past everything the smaller-stride dims span
    for stride, size in dims:
        if stride <= span:
            break
        span += stride * (size - 1)
    else:
        return False
    offsets = _byte_offsets(t).sort().values
    return bool((offsets[1:] == offsets[:-1]).any())


def byte_range(t: torch.Tensor) -> Tuple[int, int]:
    """[first byte, end) of the memory a (non-meta) tensor's elements lie in."""
    begin = t.data_ptr()
    if t.is_contiguous():
        return begin, begin + t.nbytes
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return begin, begin + (last + 1) * t.element_size()


def _elements_intersect(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.data_ptr() == b.data_ptr() and a.dtype == b.dtype:
        return True  # the same first element
    shift = b.data_ptr() - a.data_ptr()
    starts = torch.cat([_byte_offsets(a), _byte_offsets(b) + shift])
    ends = torch.cat([_byte_offsets(a) + a.element_size(),
                      _byte_offsets(b) + shift + b.element_size()])
    order = starts.argsort()
    starts, ends = starts[order], ends[order]
    # Elements of one tensor are disjoint, so an intersection shows between neighbours.
    return bool((starts[1:] < ends[:-1]).any())


def shared_memory_pairs(tensors: Sequence[torch.Tensor],
                        ranges: List[Tuple[int, int, int]]) -> List[Tuple[int, int]]:
    """Index pairs (i < j) of tensors that share memory, given (begin, end, i) = byte_range of
    tensors[i] for every non-empty, non-meta one. The ranges are sorted (a long list costs
    n log n); only intersecting ranges get the exact element test."""
    ranges.sort()
    pairs = []
    open_: list = []  # earlier ranges that may still reach the current one
    reach = -1        # the largest end so far
    for begin, end, i in ranges:
        if begin < reach:
            open_ = [r for r in open_ if r[1] > begin]
            for _, _, j in open_:
                a, b = tensors[j], tensors[i]
                if a.device == b.device and _elements_intersect(a, b):
                    pairs.append((min(i, j), max(i, j)))
        else:
            open_.clear()
        open_.append((begin, end, i))
        if end > reach:
            reach = end
    return sorted(pairs)
