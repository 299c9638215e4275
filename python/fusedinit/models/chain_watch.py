"""Watching the samplers the engine folds: a queued write issued by torch's or timm's
trunc_normal_ (found by frame identity, torch_internals.sampler_call) begins a chain the engine
expects to fold into one TruncNormal. If that call's first op is not the pattern's first op, or
the queue is written while the chain has not become a TruncNormal, the installed torch / timm no
longer runs the sampler the engine recognises: the code still runs as written on the contract's
draws (correct values of its distribution), but they are not the contract's TruncNormal for that
parameter's name, so FoldMismatchWarning says so (once per process per sampler)."""
from __future__ import annotations

from typing import Dict

import torch

from ..ops.specs import TruncNormal
from ..torch_internals import SamplerCall, op_name, sampler_call, warn_fold_mismatch
from .queue import InitSession, tensor_key

aten = torch.ops.aten

# Writes that can begin a folded sampler chain (fill_ / zero_ never do: no frame walk for them).
_DRAWS = (aten.normal_.default, aten.uniform_.default)


class ChainWatch:
    def __init__(self, session: InitSession):
        self.session = session
        self.calls: Dict[tuple, SamplerCall] = {}  # queued key -> the sampler that drew it

    def _name(self, key) -> str:
        return self.session.names.get(key) or self.session.temporaries.get(key) or "a tensor"

    def written(self, func, t: torch.Tensor) -> None:
        """A write of `t` was queued: a sampler's first op begins a watched chain."""
        if self.calls:
            self.calls.pop(tensor_key(t), None)  # a new write replaces the chain
        if func not in _DRAWS:
            return
        call = sampler_call()
        if call is None or not call.expected:
            return
        key = tensor_key(t)
        got = op_name(func)
        if got != call.expected[0]:
            warn_fold_mismatch(call, self._name(key), f"its first op on the tensor was {got}")
            return
        self.calls[key] = call

    def before_flush(self) -> None:
        """The queue is about to be written: every watched chain must have folded by now."""
        for key, call in self.calls.items():
            p = self.session.pending.get(key)
            if p is not None and not isinstance(p.spec, TruncNormal):
                ops = [op_name(o.func) for o in p.ops]
                warn_fold_mismatch(call, self._name(key),
                                   f"the chain stopped after {' -> '.join([call.expected[0]] + ops)}"
                                   f" and its values were read")
        self.calls.clear()
