"""Turns the in-place init ops a model's own `_init_weights` runs into queued writes.

A TorchDispatchMode sees every aten op while a model initializes. `normal_`, `uniform_`,
`fill_` and `zero_` on a whole parameter or buffer of the model are queued in the session (a
later write to the same tensor replaces the earlier one); `zero_` of one row of a tensor with a
pending normal becomes its padding row. Every other op that touches memory with a pending write
is a barrier: the session is flushed first (or, for a copy_ over a whole pending tensor, its
pending write is dropped), then the op runs - so the model sees exactly the values it would
have seen had every write run at once. This works the same whether the model calls
`transformers.initialization` (v5) or tensor methods (`weight.data.normal_()`, v4)."""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..session import InitSession
from ..sharding import is_dtensor
from ..specs import Constant, Normal, TruncNormal, Uniform

aten = torch.ops.aten


def _arg(args, kwargs, index, name, default):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _spec(func, args, kwargs):
    """The spec an in-place init op asks for, or None (not one, or parameters fusedinit rejects)."""
    try:
        if func is aten.normal_.default:
            return Normal(_arg(args, kwargs, 1, "mean", 0.0), _arg(args, kwargs, 2, "std", 1.0))
        if func is aten.uniform_.default:
            return Uniform(_arg(args, kwargs, 1, "from", 0.0), _arg(args, kwargs, 2, "to", 1.0))
        if func is aten.fill_.Scalar:
            return Constant(args[1])
        if func is aten.zero_.default:
            return Constant(0.0)
    except (TypeError, ValueError):
        return None
    return None


_WRITES = {aten.normal_.default, aten.uniform_.default, aten.fill_.Scalar, aten.zero_.default}


def _writes_plus_zero(spec) -> bool:
    """The write is +0.0: what a padding row holds (-0.0 is a different value)."""
    return isinstance(spec, Constant) and spec.value == 0.0 and math.copysign(1.0, spec.value) > 0


def _is_view(func) -> bool:
    """Ops that return an alias without writing (select, view, detach, ...): no data is read."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write
                                 for r in returns)


class WriteRecorder(TorchDispatchMode):
    def __init__(self, session: InitSession):
        super().__init__()
        self.session = session
        # Rows (dim 0) of sharded (DTensor) parameters handed out as meta placeholders: a
        # DTensor select on a sharded dim would gather the whole tensor. id -> (param, row).
        self.rows = {}

    def _row_of_dtensor(self, func, args):
        if func is not aten.select.int or not is_dtensor(args[0]) or len(args) < 3:
            return None
        if args[1] != 0 or self.session.name_of(args[0]) is None:
            return None
        param, row = args[0], args[2] % args[0].shape[0]
        placeholder = torch.empty(param.shape[1:], dtype=param.dtype, device="meta")
        self.rows[id(placeholder)] = (placeholder, param, row)
        return placeholder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        session = self.session
        placeholder = self._row_of_dtensor(func, args)
        if placeholder is not None:
            return placeholder
        if self.rows and any(id(t) in self.rows for t in tree_leaves((args, kwargs))):
            return self._row_op(func, args, kwargs)
        if func in _WRITES and args and isinstance(args[0], torch.Tensor):
            spec = _spec(func, args, kwargs)
            if spec is not None:
                if session.queue(args[0], spec):
                    return args[0]
                if _writes_plus_zero(spec) and session.zero_row(args[0]):
                    return args[0]
        if not _is_view(func):
            tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            if any(session.touches_pending(t) for t in tensors):
                dest = args[0] if func is aten.copy_.default else None
                if dest is not None and not any(session.touches_pending(t) for t in tensors[1:]) \
                        and session.drop(dest) and not session.touches_pending(dest):
                    pass  # the copy overwrites a whole pending tensor: its write is not needed
                else:
                    session.flush()
        return func(*args, **kwargs)

    def _row_op(self, func, args, kwargs):
        """zero_ of a sharded parameter's row: its pending normal's padding row."""
        _, param, row = self.rows[id(args[0])]
        if _writes_plus_zero(_spec(func, args, kwargs)) and self.session.pad_row(param, row):
            return args[0]
        raise RuntimeError(f"fusedinit: {func} on a row of a sharded parameter during init is "
                           "not supported (only zeroing a padding row is); initialize with "
                           "fusedinit.from_config(..., device_mesh=...) instead")


@contextmanager
def recording_trunc_normal(session: InitSession):
    """torch's trunc_normal_ runs as uniform_ + erfinv_ + ... on the tensor; while recording,
    a trunc_normal_ of a whole parameter is queued as one TruncNormal instead."""
    targets = [(torch.nn.init.__dict__, "trunc_normal_")]
    try:
        from transformers import initialization as hf_init  # transformers >= 5
        targets.append((hf_init.TORCH_INIT_FUNCTIONS, "trunc_normal_"))
    except ImportError:
        pass
    originals = [(table, key, table[key]) for table, key in targets]
    torch_trunc_normal = originals[0][2]

    def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
        try:
            spec = TruncNormal(mean, std, a, b)
        except (TypeError, ValueError):
            spec = None
        if spec is not None and session.queue(tensor, spec):
            return tensor
        return torch_trunc_normal(tensor, mean=mean, std=std, a=a, b=b, generator=generator)

    for table, key, _ in originals:
        table[key] = trunc_normal_
    try:
        yield
    finally:
        for table, key, original in originals:
            table[key] = original
