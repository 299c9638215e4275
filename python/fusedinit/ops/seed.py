"""Seeds and streams: 64-bit unsigned integers; seed=None draws 64 bits from a torch generator."""
from __future__ import annotations

import numbers
from typing import Optional

import torch

U64 = 1 << 64


def check_u64(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int in [0, 2**64), got {type(value).__name__}")
    value = int(value)
    if not 0 <= value < U64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return value


def resolve_seed(seed: Optional[int], generator: Optional[torch.Generator]) -> int:
    """The explicit seed, or 64 bits drawn from `generator` (default: torch's CPU generator),
    so torch.manual_seed(s) makes every call reproducible."""
    if seed is not None:
        return check_u64("seed", seed)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    gen = generator if generator is not None else torch.default_generator
    halves = torch.randint(0, 1 << 32, (2,), dtype=torch.int64, generator=gen, device=gen.device)
    lo, hi = halves.tolist()
    return lo | (hi << 32)
