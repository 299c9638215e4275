"""The one owner of init-write interception: `recording(module, seed)` and `fuse`.

While a recording is open on this thread (or task), a TorchDispatchMode sees every aten op.
`normal_`, `uniform_`, `fill_` and `zero_` on a whole parameter or buffer of the module are
queued (queue.py; a later write to the same tensor replaces the earlier one); `zero_` of one
row of a tensor with a pending normal becomes its padding row. Chains of ops that init code
issues on a freshly queued tensor are folded into one spec when the result is exactly the
contract's values for that spec (folding.py). Every other op that touches memory with a
pending write is a barrier: the queue is written first (deferred chain ops replayed on the
written values), then the op runs - so the code sees exactly the values it would have seen had
every write run at once, with the random values drawn from the contract.

The parts: folding.py (chains), temporaries.py (fresh tensors, placeholders, folded
temporaries), dtensor_rows.py (rows of sharded parameters); this file routes each op to them
through a table keyed by op, with a fast exit for ops while nothing is pending.

Nothing here is process-wide: the current recording is a ContextVar (restored by token) and
the dispatch mode lives on the thread's own mode stack; no module attribute is swapped.
"""
from __future__ import annotations

import contextvars
import math
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..ops.seed import resolve_seed
from ..ops.specs import Constant, Normal, Uniform
from .chain_watch import ChainWatch
from .dtensor_rows import DTensorRows
from .folding import CHAIN_OPS, MASK_OPS, arg, fold, known_false_op
from .places import Places
from .queue import InitSession
from .temporaries import FACTORIES, LAZY_OPS, Temporaries, tensors_of

aten = torch.ops.aten

_current: contextvars.ContextVar[Optional[InitSession]] = contextvars.ContextVar(
    "fusedinit_recording", default=None)


def current_session() -> Optional[InitSession]:
    """The recording open in this context (thread / task), if any."""
    return _current.get()


# -- init writes -------------------------------------------------------------------------------
def _make_spec(func, args, kwargs):
    try:
        if func is aten.normal_.default:
            return Normal(arg(args, kwargs, 1, "mean", 0.0), arg(args, kwargs, 2, "std", 1.0))
        if func is aten.uniform_.default:
            return Uniform(arg(args, kwargs, 1, "from", 0.0), arg(args, kwargs, 2, "to", 1.0))
        if func is aten.fill_.Scalar:
            return Constant(args[1])
        if func is aten.zero_.default:
            return Constant(0.0)
    except (TypeError, ValueError):
        return None
    return None


# Specs are immutable: one object per distinct write (init code repeats a few thousand times
# the same handful: ones, zeros, normal(0, 0.02)).
_SPECS: Dict[tuple, object] = {}
_ZERO = Constant(0.0)


def spec_of(func, args, kwargs):
    """The spec an in-place init op asks for, or None (not one, or parameters fusedinit rejects,
    or an explicit torch generator: the code asked for torch's stream, not the contract's)."""
    if func is aten.zero_.default:
        return _ZERO
    if kwargs and (kwargs.get("generator") is not None or len(kwargs) > 1
                   or "generator" not in kwargs):
        return None if kwargs.get("generator") is not None else _make_spec(func, args, kwargs)
    # Each argument keyed so that what == does not tell apart is told apart (1 / 1.0 / True,
    # 0.0 / -0.0); written out inline, as this runs once per intercepted write.
    try:
        if len(args) == 2:  # fill_(value): the most common write
            x = args[1]
            key = (id(func), type(x), x, x == 0 and math.copysign(1.0, x) < 0)
        else:
            key = (id(func), *[(type(x), x, x == 0 and math.copysign(1.0, x) < 0)
                               for x in args[1:]])
    except TypeError:  # not a number
        return _make_spec(func, args, kwargs)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _make_spec(func, args, kwargs)
        if spec is not None:
            if len(_SPECS) > 4096:
                _SPECS.clear()
            _SPECS[key] = spec
    return spec


_WRITES = (aten.normal_.default, aten.uniform_.default, aten.fill_.Scalar, aten.zero_.default)


def _writes_plus_zero(spec) -> bool:
    """The write is +0.0: what a padding row holds (-0.0 is a different value)."""
    return isinstance(spec, Constant) and spec.value == 0.0 and math.copysign(1.0, spec.value) > 0


_VIEWS: Dict[object, bool] = {}


def is_view(func) -> bool:
    """Ops that return an alias without writing (select, view, detach, ...): no data is read."""
    known = _VIEWS.get(func)
    if known is None:
        returns = func._schema.returns
        known = _VIEWS[func] = bool(returns) and all(
            r.alias_info is not None and not r.alias_info.is_write for r in returns)
    return known


# A handler's answer when the op is not its case: the op goes on to the next stage.
NOT_HANDLED = object()


class _Interceptor(TorchDispatchMode):
    """Routes each aten op: a handler table for the ops that may be init writes, chain steps,
    masks or DTensor rows; row placeholders and temporaries first while there are any; every
    other op is a barrier only when it touches memory with a pending write."""

    def __init__(self, session: InitSession):
        super().__init__()
        self.session = session
        self.rows = DTensorRows(session)
        self.temps = Temporaries(session)
        self.watch = ChainWatch(session)
        # Keyed by id(op): ops are singletons, and OpOverload.__hash__ is Python code.
        self.first: Dict[int, Callable] = {id(op): self._mask for op in MASK_OPS}
        self.first[id(aten.select.int)] = self._select
        self.then: Dict[int, Callable] = {id(op): self._write for op in _WRITES}
        self.then.update({id(op): self._chain for op in CHAIN_OPS})
        self.fast: Dict[int, Callable] = {id(op): self._own_write for op in _WRITES}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        fast = self.fast.get(id(func))
        if fast is not None:
            result = fast(func, args, kwargs)
            if result is not NOT_HANDLED:
                return result
        kwargs = kwargs or {}
        first = self.first.get(id(func))
        if first is not None:
            result = first(func, args, kwargs)
            if result is not NOT_HANDLED:
                return result
        if self.rows.rows and self.rows.row_of(tensors_of(args, kwargs)) is not None:
            return self.rows.op_on(args, func, _writes_plus_zero(spec_of(func, args, kwargs)))
        if func in FACTORIES:
            out = func(*args, **kwargs)
            self.temps.made(out)
            return out
        if self.temps.active():
            handled, result, args, kwargs = self._temporaries(func, args, kwargs)
            if handled:
                return result
        then = self.then.get(id(func))
        if then is not None:
            result = then(func, args, kwargs)
            if result is not NOT_HANDLED:
                return result
        return self._barrier(func, args, kwargs)

    # -- stages ------------------------------------------------------------------------------
    def _own_write(self, func, args, kwargs):
        """The fast lane (most ops of an init pass): an init write to one of the module's own
        parameter or buffer objects, while no row placeholder or temporary needs a look -
        what the stages below do with it, without asking for its memory first."""
        t = args[0] if args else None
        row = self.session.own_row(t)
        if row is None or self.rows.rows or self.temps.active():
            return NOT_HANDLED
        spec = spec_of(func, args, kwargs or {})
        if spec is None or not self.session.queue_own(row, spec):
            return NOT_HANDLED
        if self.watch.calls or type(spec) is not Constant:  # (constants begin no chain)
            self.watch.written(func, t)
        return t

    def _mask(self, func, args, kwargs):
        handled, result = known_false_op(func, args, kwargs)
        return result if handled else NOT_HANDLED

    def _select(self, func, args, kwargs):
        placeholder = self.rows.select(func, args)
        return NOT_HANDLED if placeholder is None else placeholder

    def _temporaries(self, func, args, kwargs):
        """(handled, result, args, kwargs): folded temporaries the op touches are written; a
        cat / view / copy_ of placeholders is handled; other uses of placeholders get the real
        tensors."""
        temps = self.temps
        if temps.folded:
            temps.fill_touched(args, kwargs)
        if func in LAZY_OPS:
            handled, result = temps.lazy_op(func, args, kwargs)
            if handled:
                return True, result, args, kwargs
        if temps.lazy and temps.holds_placeholder(args, kwargs):
            args, kwargs = temps.materialize_args(args, kwargs)
        return False, None, args, kwargs

    def _write(self, func, args, kwargs):
        t = args[0] if args else None
        if not isinstance(t, torch.Tensor):
            return NOT_HANDLED
        spec = spec_of(func, args, kwargs)
        if spec is None:
            return NOT_HANDLED
        if self.session.queue(t, spec) or self.temps.queue(t, spec):
            self.watch.written(func, t)
            return t
        if _writes_plus_zero(spec) and self.session.zero_row(t):
            return t
        return NOT_HANDLED

    def _chain(self, func, args, kwargs):
        if args and isinstance(args[0], torch.Tensor) and self.session.touches_pending(args[0]):
            handled, result = fold(self.session, func, args, kwargs)
            if handled:
                return result
        return NOT_HANDLED

    def _barrier(self, func, args, kwargs):
        """Run the op; first write the queue if it reads memory with a pending write (a copy_
        over a whole pending tensor instead makes that write unneeded)."""
        session = self.session
        if not session.pending or is_view(func):
            return func(*args, **kwargs)
        tensors = list(tensors_of(args, kwargs))
        if any(session.touches_pending(t) for t in tensors):
            dest = args[0] if func is aten.copy_.default else None
            if dest is not None and not any(session.touches_pending(t) for t in tensors[1:]) \
                    and session.drop(dest) and not session.touches_pending(dest):
                pass  # the copy overwrites a whole pending tensor: its write is not needed
            elif session.temporaries and session.only_temporaries(tensors):
                self.watch.before_flush()
                session.flush_temporaries()
            else:
                self.watch.before_flush()
                session.flush()
        return func(*args, **kwargs)

    def finish(self) -> None:
        """The block ended: folded temporaries still alive get their values."""
        self.temps.fill_folded(None)
        self.watch.before_flush()


@contextmanager
def recording(root: nn.Module, seed: int, prefix: str = "",
              places: Optional[Places] = None) -> Iterator[InitSession]:
    """Record and batch every init write made inside to `root`'s parameters and buffers (named
    `prefix` + name; those in `places` are written as the global blocks given there); write
    them when the block exits - one op call per device. If the block raises, the queued writes
    are dropped (nothing more is written) and the error propagates."""
    session = InitSession(root, seed, prefix, places)
    token = _current.set(session)
    interceptor = _Interceptor(session)
    try:
        with interceptor:
            yield session
            interceptor.finish()
    except BaseException:
        session.discard()
        raise
    finally:
        _current.reset(token)
    session.flush()


@contextmanager
def fuse(module: nn.Module, *, seed: Optional[int] = None,
         generator: Optional[torch.Generator] = None) -> Iterator[nn.Module]:
    """`with fusedinit.fuse(model): <any init code>` - every init write the code makes to
    `model`'s parameters and buffers is queued and written when the block exits, in one op call
    per device, each parameter on the stream of its fully qualified name (param_stream), with
    one seed (`seed`, or drawn once from `generator` / torch's default generator). The values
    equal what the code computes when its random draws come from the contract (docs/rng.md):
    folded chains get the folded spec's values, anything else runs as written on them. Nothing
    queued is written if the block raises. DTensor parameters: each rank writes its shards.
    A draw with an explicit torch generator (`normal_(generator=g)`) asked for torch's stream:
    it runs as written."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    seed = resolve_seed(seed, generator)
    with recording(module, seed):
        yield module


__all__ = ["fuse", "recording", "current_session"]
