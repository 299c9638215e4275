"""The one owner of init-write interception: `recording(module, seed)` and `fuse`.

While a recording is open on this thread (or task), a TorchDispatchMode sees every aten op.
`normal_`, `uniform_`, `fill_` and `zero_` on a whole parameter or buffer of the module are
queued (queue.py; a later write to the same tensor replaces the earlier one); `zero_` of one
row of a tensor with a pending normal becomes its padding row. Chains of ops that init code
issues on a freshly queued tensor are folded into one spec when the result is exactly the
contract's values for that spec (torch's and timm's trunc_normal_, normal_ scaled and
shifted). Every other op that touches memory with a pending write is a barrier: the queue
is written first (deferred chain ops replayed on the written values), then the op runs - so the
code sees exactly the values it would have seen had every write run at once, with the random
values drawn from the contract.

Nothing here is process-wide: the current recording is a ContextVar (restored by token) and
dispatch / function modes live on the thread's own mode stacks; no module attribute is swapped.
"""
from __future__ import annotations

import contextvars
import dataclasses
import math
from collections import deque
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple

import weakref

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from ..ops.seed import resolve_seed
from ..ops.api import init_many_
from .queue import DeferredOp, InitSession, Pending, local_tensor, tensor_key
from ..ops.sharding import is_dtensor
from ..ops.specs import Constant, Normal, TruncNormal, Uniform

aten = torch.ops.aten

_current: contextvars.ContextVar[Optional[InitSession]] = contextvars.ContextVar(
    "fusedinit_recording", default=None)


def current_session() -> Optional[InitSession]:
    """The recording open in this context (thread / task), if any."""
    return _current.get()


def _arg(args, kwargs, index, name, default):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _spec(func, args, kwargs):
    """The spec an in-place init op asks for, or None (not one, or parameters fusedinit rejects,
    or an explicit torch generator: the code asked for torch's stream, not the contract's)."""
    if kwargs.get("generator") is not None:
        return None
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


def _meta(x):
    """x as a meta tensor of its (global) shape and dtype; anything else as is."""
    if isinstance(x, torch.Tensor):
        return torch.empty(x.shape, dtype=x.dtype, device="meta")
    return x


def _storageless(t) -> bool:
    try:
        local_tensor(t).untyped_storage()
        return False
    except (RuntimeError, NotImplementedError):
        return True


def _writes_plus_zero(spec) -> bool:
    """The write is +0.0: what a padding row holds (-0.0 is a different value)."""
    return isinstance(spec, Constant) and spec.value == 0.0 and math.copysign(1.0, spec.value) > 0


def _is_view(func) -> bool:
    """Ops that return an alias without writing (select, view, detach, ...): no data is read."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write
                                 for r in returns)


class _BoundHints(TorchFunctionMode):
    """torch's trunc_normal_ rounds its bounds to the tensor's dtype (`tensor.new_tensor(a)`)
    before comparing: the exact a and b are only visible here, one level above dispatch."""

    def __init__(self):
        super().__init__()
        self.hints: Dict[tuple, deque] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.new_tensor and len(args) >= 2 and _scalar(args[1]) \
                and isinstance(args[0], torch.Tensor):
            key = tensor_key(args[0])
            if key is not None:
                self.hints.setdefault(key, deque(maxlen=2)).append(args[1])
        return func(*args, **kwargs)


# -- chains ------------------------------------------------------------------------------------
# Init code often builds one distribution from several in-place ops on a freshly drawn tensor.
# Such a chain on a queued tensor is folded into one spec only where the folded spec's contract
# values are exactly what the chain would compute from the contract's values of its first op
# (or where the chain *is* a distribution, as trunc_normal_'s ops are); an unfinished chain is
# kept as deferred ops, replayed on the written values, so nothing is ever approximated.

def _scalar(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _step(func, args, kwargs):
    """('erfinv',), ('mul', k), ('add', m), ('clamp', a, b): the chain step an op is, or None."""
    if func is aten.erfinv_.default and len(args) == 1 and not kwargs:
        return ("erfinv",)
    if func in (aten.mul_.Tensor, aten.mul_.Scalar) and len(args) == 2 and not kwargs \
            and _scalar(args[1]):
        return ("mul", float(args[1]))
    if func in (aten.add_.Tensor, aten.add_.Scalar) and len(args) == 2 and _scalar(args[1]) \
            and kwargs.get("alpha", 1) == 1:
        return ("add", float(args[1]))
    if func is aten.clamp_.default:
        lo, hi = _arg(args, kwargs, 1, "min", None), _arg(args, kwargs, 2, "max", None)
        if len(args) <= 3 and _scalar(lo) and _scalar(hi):
            return ("clamp", float(lo), float(hi))
    return None


def _norm_cdf(x: float) -> float:
    """As torch's (<= 2.12) and timm's trunc_normal_ compute it, so their bounds are recovered
    bit for bit."""
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0


def _erfinv_chain(u: Uniform, s: float, m: float, a: float, b: float) -> Optional[TruncNormal]:
    """uniform_(2l-1, 2u-1), erfinv_, mul_(std*sqrt(2)), add_(mean), clamp_(a, b) is
    trunc_normal_(mean, std, a, b) when l = Phi((a-mean)/std), u = Phi((b-mean)/std): std is
    recovered from the product exactly, then every bound is checked."""
    if not s > 0:
        return None
    root2 = math.sqrt(2.0)
    guess = s / root2
    for std in (guess, math.nextafter(guess, 0.0), math.nextafter(guess, math.inf)):
        if std * root2 != s:
            continue
        if 2 * _norm_cdf((a - m) / std) - 1 == u.a and 2 * _norm_cdf((b - m) / std) - 1 == u.b:
            try:
                return TruncNormal(m, std, a, b)
            except (TypeError, ValueError):
                return None
    return None


def _f32(x: float) -> np.float32:
    return np.float32(x)


def _same_probabilities(old: TruncNormal, new: TruncNormal) -> bool:
    return all(_f32(x) == _f32(y) for x, y in zip(old.params()[4:], new.params()[4:]))


def _trunc_scaled(spec: TruncNormal, k: float) -> Optional[TruncNormal]:
    """TruncNormal(0, 1, a, b) then mul_(k) on float32: k * clamp(z, A, B) rounds to
    clamp(R(K z), R(K A), R(K B)) (monotone), the contract's TruncNormal(0, k, k a, k b) when
    its float32 bounds and CDF bounds are those."""
    try:
        new = TruncNormal(0.0, k, k * spec.a, k * spec.b, stream=spec.stream)
    except (TypeError, ValueError):
        return None
    K = _f32(k)
    if _f32(K * _f32(spec.a)) != _f32(new.a) or _f32(K * _f32(spec.b)) != _f32(new.b):
        return None
    return new if _same_probabilities(spec, new) else None


def _trunc_shifted(spec: TruncNormal, m: float) -> Optional[TruncNormal]:
    """TruncNormal(0, s, a, b) then add_(m) on float32: TruncNormal(m, s, a + m, b + m) under
    the same conditions as _trunc_scaled."""
    try:
        new = TruncNormal(m, spec.std, spec.a + m, spec.b + m, stream=spec.stream)
    except (TypeError, ValueError):
        return None
    M = _f32(m)
    if _f32(_f32(spec.a) + M) != _f32(new.a) or _f32(_f32(spec.b) + M) != _f32(new.b):
        return None
    return new if _same_probabilities(spec, new) else None


# Below this scale a product with z could underflow to a signed zero, where the contract's
# `mean + std * z` gives +0.
_SMALLEST_SCALE = 2.0 ** -100


def _next(p: Pending, op: DeferredOp) -> Optional[tuple]:
    """(spec, ops) after `step` on the pending write `p`, or None (not foldable: a barrier)."""
    spec, ops, step = p.spec, p.ops, op.step
    kinds = tuple(o.step[0] for o in ops)
    exact32 = p.tensor.dtype == torch.float32 and not ops
    if step[0] == "erfinv":
        if isinstance(spec, Uniform) and not ops:
            return spec, [op]
    elif step[0] == "mul":
        k = step[1]
        if isinstance(spec, Uniform) and kinds == ("erfinv",):
            return spec, ops + [op]
        if exact32 and k >= _SMALLEST_SCALE and _f32(k) >= _SMALLEST_SCALE:
            if isinstance(spec, Normal) and spec.padding_idx is None and spec.mean == 0 \
                    and spec.std == 1:
                return dataclasses.replace(spec, std=k), []
            if isinstance(spec, TruncNormal) and spec.mean == 0 and spec.std == 1:
                new = _trunc_scaled(spec, k)
                return (new, []) if new is not None else None
    elif step[0] == "add":
        m = step[1]
        if isinstance(spec, Uniform) and kinds == ("erfinv", "mul"):
            return spec, ops + [op]
        if exact32 and isinstance(spec, Normal) and spec.padding_idx is None \
                and spec.mean == 0:
            try:
                return dataclasses.replace(spec, mean=m), []
            except (TypeError, ValueError):
                return None
        if exact32 and isinstance(spec, TruncNormal) and spec.mean == 0:
            new = _trunc_shifted(spec, m)
            return (new, []) if new is not None else None
    elif step[0] == "clamp":
        if isinstance(spec, Uniform) and kinds == ("erfinv", "mul", "add"):
            new = _erfinv_chain(spec, ops[1].step[1], ops[2].step[1], step[1], step[2])
            if new is not None:
                return dataclasses.replace(new, stream=spec.stream), []
    return None


def _dtype_round(x: float, dtype: torch.dtype) -> float:
    """x as a tensor of `dtype` holds it (what `tensor.new_tensor(x).item()` gives)."""
    return torch.tensor(x, dtype=dtype).item()


def _value_range(spec: TruncNormal, dtype: torch.dtype) -> Tuple[float, float]:
    """Smallest and largest value the contract writes for `spec` in `dtype`: it clamps to the
    float32 bounds, then rounds (monotone)."""
    low = torch.tensor(float(_f32(spec.a)), dtype=torch.float32).to(dtype).item()
    high = torch.tensor(float(_f32(spec.b)), dtype=torch.float32).to(dtype).item()
    return low, high


def _torch_trunc_normal(p: Pending, bounds: tuple, lo: float) -> Optional[TruncNormal]:
    """torch's rejection-sampling trunc_normal_ (the inverse-CDF one is _erfinv_chain) is
    `lo = t.new_tensor(a).item()`, the same for b,
    `t.normal_(mean, std)`, then rejection while any `t < lo` or `t > hi`. Seen as exactly that
    on a queued normal - both bounds taken from this tensor just before the write, the first
    comparison against a rounded to its dtype - it is one TruncNormal(mean, std, a, b), whose
    values all lie in [lo, hi]: the rejection test then finds nothing and the loop ends."""
    spec, dtype = p.spec, p.tensor.dtype
    if p.ops or not isinstance(spec, Normal) or spec.padding_idx is not None or len(bounds) != 2:
        return None
    a, b = bounds
    if _dtype_round(a, dtype) != lo:
        return None
    try:
        new = TruncNormal(spec.mean, spec.std, a, b, stream=spec.stream)
    except (TypeError, ValueError):
        return None
    low, high = _value_range(new, dtype)
    if not (lo <= low and high <= _dtype_round(b, dtype)):
        return None
    return new


def _fold(session: InitSession, bounds: Dict[tuple, tuple], func, args, kwargs):
    """(handled, result) for an op on exactly a queued tensor that continues a foldable chain."""
    t = args[0] if args else None
    if not isinstance(t, torch.Tensor):
        return False, None
    key = tensor_key(t)
    p = session.pending.get(key) if key is not None else None
    if p is None:
        return False, None
    if func in (aten.lt.Scalar, aten.gt.Scalar) and len(args) == 2 and not kwargs \
            and _scalar(args[1]):
        x = float(args[1])
        if func is aten.lt.Scalar and isinstance(p.spec, Normal):
            new = _torch_trunc_normal(p, bounds.get(key, ()), x)
            if new is None:
                return False, None
            p.spec = new
        if isinstance(p.spec, TruncNormal) and not p.ops:
            low, high = _value_range(p.spec, p.tensor.dtype)
            if (x <= low) if func is aten.lt.Scalar else (x >= high):
                # No value is outside: the comparison is known without reading the tensor.
                return True, _all_false_like(t)
        return False, None
    step = _step(func, args, kwargs)
    if step is None:
        return False, None
    after = _next(p, DeferredOp(step, func, args, kwargs))
    if after is None:
        return False, None
    p.spec, p.ops = after
    return True, t


def _all_false_like(t: torch.Tensor) -> torch.Tensor:
    """An all-False mask shaped like `t`. For a plain tensor one stride-0 byte marked as known
    false, so torch's `(t < lo) | (t > hi)` and `.any()` (answered in `_known_false_op`) cost
    nothing instead of two full-size bool tensors a parameter; a DTensor gets a real mask
    sharded like it."""
    if is_dtensor(t):
        return torch.zeros_like(t, dtype=torch.bool)
    mask = torch.zeros((), dtype=torch.bool, device=t.device).expand(t.shape)
    mask._fusedinit_all_false = True
    return mask


def _known_false(x) -> bool:
    return isinstance(x, torch.Tensor) and getattr(x, "_fusedinit_all_false", False)


_OR = {aten.bitwise_or.Tensor, aten.logical_or.default}


def _known_false_op(func, args, kwargs):
    """(handled, result) for `|` of two known-false masks (another one) and `.any()` of one
    (False); anything else on them runs as written on the stride-0 tensor."""
    if func in _OR and len(args) == 2 and not kwargs and _known_false(args[0]) \
            and _known_false(args[1]) and args[0].shape == args[1].shape:
        return True, _all_false_like(args[0])
    if func is aten.any.default and len(args) == 1 and _known_false(args[0]):
        # On meta (deferred_init) the answer is a CPU scalar: the caller tests it with bool().
        device = "cpu" if args[0].device.type == "meta" else args[0].device
        return True, torch.zeros((), dtype=torch.bool, device=device)
    return False, None


# -- temporaries ---------------------------------------------------------------------------------
# Init code may draw into a fresh tensor of its own and copy it into a parameter (torchtitan's
# fused wqkv: q, k, v drawn with trunc_normal_, concatenated, then `wqkv.copy_(fused)`). An init
# write to a fresh tensor that is not the module's is queued too, unnamed: the n-th temporary of
# a recording is drawn, if it is ever written, on param_stream("fusedinit.temporary.<n>") - a
# deterministic stream, so a temporary that is read gets the same values in every run. A `cat`
# of whole pending temporaries with one spec (streams aside), and views of that, are lazy meta
# placeholders carrying the spec (nothing allocated, nothing computed, no collective on
# DTensors); a whole-tensor `param.copy_(placeholder)` of exactly the param's shape and dtype
# queues that spec on the param under its own name: its elements are i.i.d. draws of the spec in
# some order, which is what the param's own write of the spec is. Any other use of a placeholder
# writes its temporaries (on their streams) and runs the recorded ops, then the op as written.

_FACTORIES = {aten.new_empty.default, aten.empty.memory_format, aten.empty_like.default}
_LAZY_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.alias.default,
               aten.detach.default}


def _drawless(spec):
    """The spec with its stream cleared: what two i.i.d. sources must share."""
    if "stream" in {f.name for f in dataclasses.fields(spec)}:
        return dataclasses.replace(spec, stream=0)
    return spec


@dataclasses.dataclass
class _Lazy:
    """A placeholder's spec (stream cleared), the temporaries it draws from, and how it is made
    from them: (func, args, kwargs), args holding real tensors or other placeholders."""

    spec: object
    sources: tuple
    func: object
    args: tuple
    kwargs: dict
    real: Optional[torch.Tensor] = None


class _Interceptor(TorchDispatchMode):
    def __init__(self, session: InitSession, hints: _BoundHints):
        super().__init__()
        self.session = session
        self.hints = hints.hints
        # key -> the bounds `new_tensor` took from the tensor just before its queued write.
        self.bounds: Dict[tuple, tuple] = {}
        # Rows (dim 0) of sharded (DTensor) parameters handed out as meta placeholders: a
        # DTensor select on a sharded dim would gather the whole tensor. id -> (param, row).
        self.rows = {}
        # Fresh tensors made inside the recording (the only ones that can become temporaries).
        # id -> weakref (a WeakSet would compare tensors with ==, itself an op).
        self.fresh: Dict[int, weakref.ref] = {}
        self.temporaries = 0  # counter naming each temporary's stream
        # id(placeholder) -> _Lazy; an entry goes when its placeholder does.
        self.lazy: Dict[int, _Lazy] = {}
        # storage -> (weakref to a temporary folded into a param, its key, how to fill it).
        self.folded: Dict[int, tuple] = {}
        self.temp_objects: Dict[tuple, weakref.ref] = {}

    # -- temporaries -----------------------------------------------------------------------
    def _queue_temporary(self, t: torch.Tensor, spec) -> bool:
        ref = self.fresh.get(id(t))
        if ref is None or ref() is not t or not t.is_floating_point():
            return False
        local = local_tensor(t)
        if not local.is_contiguous() or local.storage_offset() != 0 or \
                local.numel() * local.element_size() != local.untyped_storage().nbytes():
            return False
        key = tensor_key(t)
        if key is None:
            return False
        label = f"fusedinit.temporary.{self.temporaries}"
        self.temporaries += 1
        self.session.queue_temporary(t, spec, label)
        self.temp_objects[key] = weakref.ref(t)  # the code's own object (the queue holds an alias)
        return True

    def _source(self, x) -> Optional[Tuple[object, tuple]]:
        """(spec without stream, source keys) of a placeholder or of a whole pending
        temporary, or None."""
        if not isinstance(x, torch.Tensor):
            return None
        lazy = self.lazy.get(id(x))
        if lazy is not None:
            return lazy.spec, lazy.sources
        key = self.session.whole_temporary(x)
        if key is None:
            return None
        return _drawless(self.session.pending[key].spec), (key,)

    def _placeholder(self, func, args, kwargs, spec, sources) -> torch.Tensor:
        meta_args = tuple([_meta(a) for a in x] if isinstance(x, (list, tuple)) else _meta(x)
                          for x in args)
        out = func(*meta_args, **kwargs)
        self.lazy[id(out)] = _Lazy(spec, sources, func, args, kwargs)
        weakref.finalize(out, self.lazy.pop, id(out), None)
        return out

    def _lazy_op(self, func, args, kwargs):
        """(handled, result): cat of temporaries, a view of a placeholder, or a copy_ of one
        into a parameter."""
        if func is aten.cat.default and args and isinstance(args[0], (list, tuple)) \
                and len(args[0]) > 0:
            found = [self._source(x) for x in args[0]]
            if any(f is None for f in found):
                return False, None
            keys = [k for _, ks in found for k in ks]
            specs = {f[0] for f in found}
            dtypes = {x.dtype for x in args[0]}
            if len(specs) != 1 or len(set(keys)) != len(keys) or len(dtypes) != 1:
                return False, None
            return True, self._placeholder(func, args, kwargs, specs.pop(), tuple(keys))
        if not args or not isinstance(args[0], torch.Tensor):
            return False, None
        lazy = self.lazy.get(id(args[0]))
        if lazy is not None and func in _LAZY_VIEWS:
            out = self._placeholder(func, args, kwargs, lazy.spec, lazy.sources)
            if out.is_contiguous() and out.numel() == args[0].numel():
                return True, out
            return False, None
        if func is aten.copy_.default and len(args) >= 2:
            found = self._source(args[1])
            dest, src = args[0], args[1]
            if found is None or self.session.name_of(dest) is None \
                    or dest.shape != src.shape or dest.dtype != src.dtype:
                return False, None
            spec, keys = found
            if any(k not in self.session.pending for k in keys):
                return False, None
            # Whole param, same shape and dtype: the param's own write of the spec.
            if not self.session.queue(dest, spec):
                return False, None
            self._keep_folded(src, keys, self.session.entry(dest).spec, tuple(dest.shape))
            for k in keys:
                self.session.drop_key(k)
            return True, dest
        return False, None

    # A folded temporary is not written by the param's write; should it still be alive and be
    # used (or outlive the recording), it gets the values it holds in the param: the param's
    # contract values (computed whole, no collective) put back through the recorded cat/views.
    # Tracked by a weakref to the temporary: an entry goes with it (its memory cannot be reused
    # while it lives); a view that outlives its temporary is not tracked.
    def _keep_folded(self, src, keys, spec, shape):
        temps = [self.temp_objects.pop(k, lambda: None)() for k in keys]
        if any(t is None for t in temps):
            temps = [self.session.pending[k].tensor for k in keys]
        sizes = [local_tensor(t).numel() for t in temps]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        index = {k: (o, n) for k, o, n in zip(keys, offsets, sizes)}
        record = (self._skeleton(src, index), index, spec, shape, sum(sizes))
        for k, t in zip(keys, temps):
            c = local_tensor(t).untyped_storage()._cdata
            self.folded[c] = (weakref.ref(t, lambda _, c=c: self.folded.pop(c, None)), k, record)

    def _skeleton(self, x, index):
        """How a placeholder (or a whole temporary view) is made, with each temporary replaced
        by its (offset, size, shape) among the concatenated temporaries: no tensor is kept."""
        lazy = self.lazy.get(id(x))
        if lazy is None:
            s = local_tensor(x).untyped_storage()._cdata
            key = next(k for k in index if k[0] == s)
            return ("slot",) + index[key] + (tuple(x.shape),)
        args = tree_map(lambda a: self._skeleton(a, index) if isinstance(a, torch.Tensor)
                        else a, lazy.args)
        return ("op", lazy.func, args, lazy.kwargs)

    @staticmethod
    def _index_of(skeleton):
        """The skeleton run on positions: each element's position among the temporaries."""
        if skeleton[0] == "slot":
            _, o, n, shape = skeleton
            return torch.arange(o, o + n).view(shape)
        _, func, args, kwargs = skeleton
        node = lambda a: isinstance(a, tuple) and bool(a) and a[0] in ("slot", "op")  # noqa: E731
        args = tree_map(lambda a: _Interceptor._index_of(a) if node(a) else a, args,
                        is_leaf=node)
        return func(*args, **kwargs)

    def _fill_folded(self, storages) -> None:
        """Write the folded temporaries on `storages` (all if None) with their values."""
        done = set()
        for s in list(self.folded if storages is None else storages):
            entry = self.folded.pop(s, None)
            if entry is None:
                continue
            ref, key, record = entry
            t = ref()
            if t is None:
                continue
            src, index, spec, shape, total = record
            full = init_many_([(torch.empty(shape, dtype=local_tensor(t).dtype,
                                            device=local_tensor(t).device), spec)],
                              seed=self.session.seed)[0]
            values = torch.empty(total, dtype=full.dtype, device=full.device)
            values[self._index_of(src).reshape(-1).to(full.device)] = full.reshape(-1)
            o, n = index[key]
            with torch.no_grad():
                local_tensor(t).view(-1).copy_(values[o:o + n])
            done.add(s)

    def _materialize(self, x):
        """The real tensor a placeholder stands for: its temporaries written (flush), then the
        recorded ops run as written."""
        lazy = self.lazy.get(id(x)) if isinstance(x, torch.Tensor) else None
        if lazy is None:
            return x
        if lazy.real is None:
            if any(k in self.session.pending for k in lazy.sources):
                self.session.flush_temporaries()
            args = tuple([self._materialize(a) for a in v] if isinstance(v, (list, tuple))
                         else self._materialize(v) for v in lazy.args)
            lazy.real = lazy.func(*args, **lazy.kwargs)
        return lazy.real

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
        if func in _OR or func is aten.any.default:
            handled, result = _known_false_op(func, args, kwargs)
            if handled:
                return result
        placeholder = self._row_of_dtensor(func, args)
        if placeholder is not None:
            return placeholder
        if self.rows and any(id(t) in self.rows for t in tree_leaves((args, kwargs))):
            return self._row_op(func, args, kwargs)
        if func in _FACTORIES:
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                self.fresh[id(out)] = weakref.ref(out, lambda _, i=id(out): self.fresh.pop(i, None))
            return out
        if self.folded:
            touched = {local_tensor(t).untyped_storage()._cdata
                       for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
                       and not _storageless(t)} & set(self.folded)
            if touched:
                self._fill_folded(touched)
        if self.lazy or session.temporaries:
            handled, result = self._lazy_op(func, args, kwargs)
            if handled:
                return result
            if self.lazy and any(isinstance(t, torch.Tensor) and id(t) in self.lazy
                                 for t in tree_leaves((args, kwargs))):
                args, kwargs = tree_map(self._materialize, (args, kwargs))
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if func in _WRITES and args and isinstance(args[0], torch.Tensor):
            spec = _spec(func, args, kwargs)
            if spec is not None:
                key = tensor_key(args[0])
                if session.queue(args[0], spec) or self._queue_temporary(args[0], spec):
                    self.bounds[key] = tuple(self.hints.pop(key, ()))
                    return args[0]
                if _writes_plus_zero(spec) and session.zero_row(args[0]):
                    return args[0]
        if tensors and session.touches_pending(tensors[0]):
            handled, result = _fold(session, self.bounds, func, args, kwargs)
            if handled:
                return result
        if not _is_view(func) and any(session.touches_pending(t) for t in tensors):
            dest = args[0] if func is aten.copy_.default else None
            if dest is not None and not any(session.touches_pending(t) for t in tensors[1:]) \
                    and session.drop(dest) and not session.touches_pending(dest):
                pass  # the copy overwrites a whole pending tensor: its write is not needed
            elif session.temporaries and session.only_temporaries(tensors):
                session.flush_temporaries()
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
def recording(root: nn.Module, seed: int, prefix: str = "") -> Iterator[InitSession]:
    """Record and batch every init write made inside to `root`'s parameters and buffers (named
    `prefix` + name); write them when the block exits - one op call per device. If the block
    raises, the queued writes are dropped (nothing more is written) and the error propagates."""
    session = InitSession(root, seed, prefix)
    token = _current.set(session)
    hints = _BoundHints()
    interceptor = _Interceptor(session, hints)
    try:
        with hints, interceptor:
            yield session
            interceptor._fill_folded(None)
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
