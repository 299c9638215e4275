"""Temporaries: init code may draw into a fresh tensor of its own and copy it into a parameter
(torchtitan's fused wqkv: q, k, v drawn with trunc_normal_, concatenated, then
`wqkv.copy_(fused)`). An init write to a fresh tensor that is not the module's is queued too,
unnamed: the n-th temporary of a recording is drawn, if it is ever written, on
param_stream("fusedinit.temporary.<n>") - a deterministic stream, so a temporary that is read
gets the same values in every run. A `cat` of whole pending temporaries with one spec (streams
aside), and views of that, are lazy meta placeholders carrying the spec (nothing allocated,
nothing computed, no collective on DTensors); a whole-tensor `param.copy_(placeholder)` of
exactly the param's shape and dtype queues that spec on the param under its own name: its
elements are i.i.d. draws of the spec in some order, which is what the param's own write of the
spec is. Any other use of a placeholder writes its temporaries (on their streams) and runs the
recorded ops, then the op as written.

A folded temporary is not written by the param's write; should it still be alive and be used
(or outlive the recording), it gets the values it holds in the param: the param's contract
values (computed whole, no collective) put back through the recorded cat / views. Tracked by a
weakref to the temporary: an entry goes with it (its memory cannot be reused while it lives); a
view that outlives its temporary is not tracked."""
from __future__ import annotations

import dataclasses
import weakref
from typing import Dict, Optional, Tuple, Union

import torch

from ..ops.api import init_many_
from ..torch_internals import storage_address
from .queue import InitSession, local_tensor, tensor_key, with_stream

aten = torch.ops.aten

FACTORIES = (aten.new_empty.default, aten.empty.memory_format, aten.empty_like.default)
_LAZY_VIEWS = {aten.view.default, aten._unsafe_view.default, aten.alias.default,
               aten.detach.default}
LAZY_OPS = (aten.cat.default, aten.copy_.default) + tuple(_LAZY_VIEWS)


def _drawless(spec):
    """The spec with its stream cleared: what two i.i.d. sources must share."""
    return with_stream(spec, 0)


def _meta(x):
    """x as a meta tensor of its (global) shape and dtype; anything else as is."""
    if isinstance(x, torch.Tensor):
        return torch.empty(x.shape, dtype=x.dtype, device="meta")
    return x


def _map_tensors(fn, value):
    """`fn` on each tensor of an op argument (a tensor or a list / tuple of them)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(fn(x) if isinstance(x, torch.Tensor) else x for x in value)
    return value


@dataclasses.dataclass
class Lazy:
    """A placeholder's spec (stream cleared), the temporaries it draws from, and how it is made
    from them: (func, args, kwargs), args holding real tensors or other placeholders."""

    spec: object
    sources: tuple
    func: object
    args: tuple
    kwargs: dict
    real: Optional[torch.Tensor] = None


@dataclasses.dataclass(frozen=True)
class Slot:
    """One temporary among the concatenated temporaries: its elements' positions."""

    offset: int
    size: int
    shape: tuple


@dataclasses.dataclass(frozen=True)
class Made:
    """An op of the recorded cat / views, its tensor arguments replaced by skeletons."""

    func: object
    args: tuple
    kwargs: dict


Skeleton = Union[Slot, Made]


def positions(skeleton: Skeleton) -> torch.Tensor:
    """The skeleton run on positions: each element's position among the temporaries."""
    if isinstance(skeleton, Slot):
        return torch.arange(skeleton.offset, skeleton.offset + skeleton.size).view(skeleton.shape)
    args = tuple(_map_skeleton(a) for a in skeleton.args)
    return skeleton.func(*args, **skeleton.kwargs)


def _map_skeleton(value):
    if isinstance(value, (Slot, Made)):
        return positions(value)
    if isinstance(value, (list, tuple)):
        return type(value)(positions(x) if isinstance(x, (Slot, Made)) else x for x in value)
    return value


@dataclasses.dataclass(frozen=True)
class FoldedRecord:
    """How to compute a folded temporary's values: the param's spec and shape, and where each
    temporary's elements went."""

    skeleton: Skeleton
    index: Dict[tuple, Tuple[int, int]]   # temporary key -> (offset, size)
    spec: object
    shape: tuple
    total: int


class Temporaries:
    """Per recording: fresh tensors, pending temporaries' placeholders and folded temporaries."""

    def __init__(self, session: InitSession):
        self.session = session
        # Fresh tensors made inside the recording (the only ones that can become temporaries).
        # id -> weakref (a WeakSet would compare tensors with ==, itself an op).
        self.fresh: Dict[int, weakref.ref] = {}
        self.count = 0  # counter naming each temporary's stream
        # id(placeholder) -> Lazy; an entry goes when its placeholder does.
        self.lazy: Dict[int, Lazy] = {}
        # storage -> (weakref to a temporary folded into a param, its key, how to fill it).
        self.folded: Dict[int, Tuple[weakref.ref, tuple, FoldedRecord]] = {}
        self.objects: Dict[tuple, weakref.ref] = {}

    def active(self) -> bool:
        """Anything to check on ops other than factories and writes."""
        return bool(self.lazy or self.folded or self.session.temporaries)

    def made(self, out) -> None:
        """`out` came from a factory op: it may become a temporary."""
        if isinstance(out, torch.Tensor):
            self.fresh[id(out)] = weakref.ref(out, lambda _, i=id(out): self.fresh.pop(i, None))

    def queue(self, t: torch.Tensor, spec) -> bool:
        """Queue an init write to a whole fresh tensor as a temporary; False if it is not one."""
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
        label = f"fusedinit.temporary.{self.count}"
        self.count += 1
        self.session.queue_temporary(t, spec, label)
        self.objects[key] = weakref.ref(t)  # the code's own object (the queue holds an alias)
        return True

    # -- placeholders ----------------------------------------------------------------------
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
        out = func(*(_map_tensors(_meta, x) for x in args), **kwargs)
        self.lazy[id(out)] = Lazy(spec, sources, func, args, kwargs)
        weakref.finalize(out, self.lazy.pop, id(out), None)
        return out

    def _cat(self, func, args, kwargs):
        found = [self._source(x) for x in args[0]]
        if any(f is None for f in found):
            return False, None
        keys = [k for _, ks in found for k in ks]
        specs = {f[0] for f in found}
        dtypes = {x.dtype for x in args[0]}
        if len(specs) != 1 or len(set(keys)) != len(keys) or len(dtypes) != 1:
            return False, None
        return True, self._placeholder(func, args, kwargs, specs.pop(), tuple(keys))

    def _copy_into_param(self, args):
        """`param.copy_(placeholder or whole temporary)`: the param's own write of the spec."""
        dest, src = args[0], args[1]
        found = self._source(src)
        if found is None or self.session.name_of(dest) is None \
                or dest.shape != src.shape or dest.dtype != src.dtype:
            return False, None
        spec, keys = found
        if any(k not in self.session.pending for k in keys):
            return False, None
        if not self.session.queue(dest, spec):
            return False, None
        self._keep_folded(src, keys, self.session.entry(dest).spec, tuple(dest.shape))
        for k in keys:
            self.session.drop_key(k)
        return True, dest

    def lazy_op(self, func, args, kwargs):
        """(handled, result): cat of temporaries, a view of a placeholder, or a copy_ of one
        into a parameter."""
        if func is aten.cat.default:
            if args and isinstance(args[0], (list, tuple)) and len(args[0]) > 0:
                return self._cat(func, args, kwargs)
            return False, None
        if not args or not isinstance(args[0], torch.Tensor):
            return False, None
        lazy = self.lazy.get(id(args[0]))
        if lazy is not None and func in _LAZY_VIEWS:
            out = self._placeholder(func, args, kwargs, lazy.spec, lazy.sources)
            if out.is_contiguous() and out.numel() == args[0].numel():
                return True, out
            return False, None
        if func is aten.copy_.default and len(args) >= 2:
            return self._copy_into_param(args)
        return False, None

    def holds_placeholder(self, args, kwargs) -> bool:
        lazy = self.lazy
        return any(id(t) in lazy for t in tensors_of(args, kwargs))

    def materialize(self, x):
        """The real tensor a placeholder stands for: its temporaries written (flush), then the
        recorded ops run as written."""
        lazy = self.lazy.get(id(x)) if isinstance(x, torch.Tensor) else None
        if lazy is None:
            return x
        if lazy.real is None:
            if any(k in self.session.pending for k in lazy.sources):
                self.session.flush_temporaries()
            args = tuple(_map_tensors(self.materialize, v) for v in lazy.args)
            lazy.real = lazy.func(*args, **lazy.kwargs)
        return lazy.real

    def materialize_args(self, args, kwargs):
        return (tuple(_map_tensors(self.materialize, a) for a in args),
                {k: _map_tensors(self.materialize, v) for k, v in kwargs.items()})

    # -- folded temporaries ----------------------------------------------------------------
    def _keep_folded(self, src, keys, spec, shape):
        temps = [self.objects.pop(k, lambda: None)() for k in keys]
        if any(t is None for t in temps):
            temps = [self.session.pending[k].tensor for k in keys]
        sizes = [local_tensor(t).numel() for t in temps]
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        index = {k: (o, n) for k, o, n in zip(keys, offsets, sizes)}
        record = FoldedRecord(self._skeleton(src, index), index, spec, shape, sum(sizes))
        for k, t in zip(keys, temps):
            c = storage_address(local_tensor(t))
            self.folded[c] = (weakref.ref(t, lambda _, c=c: self.folded.pop(c, None)), k, record)

    def _skeleton(self, x, index) -> Skeleton:
        """How a placeholder (or a whole temporary view) is made, with each temporary replaced
        by its Slot among the concatenated temporaries: no tensor is kept."""
        lazy = self.lazy.get(id(x))
        if lazy is None:
            s = storage_address(local_tensor(x))
            key = next(k for k in index if k[0] == s)
            return Slot(*index[key], tuple(x.shape))
        args = tuple(_map_tensors(lambda a: self._skeleton(a, index), v) for v in lazy.args)
        return Made(lazy.func, args, lazy.kwargs)

    def fill_touched(self, args, kwargs) -> None:
        """Write the folded temporaries an op's arguments touch."""
        touched = set()
        for t in tensors_of(args, kwargs):
            try:
                c = storage_address(local_tensor(t))
            except (RuntimeError, NotImplementedError):
                continue
            if c in self.folded:
                touched.add(c)
        if touched:
            self.fill_folded(touched)

    def fill_folded(self, storages) -> None:
        """Write the folded temporaries on `storages` (all if None) with their values."""
        for s in list(self.folded if storages is None else storages):
            entry = self.folded.pop(s, None)
            if entry is None:
                continue
            ref, key, record = entry
            t = ref()
            if t is None:
                continue
            local = local_tensor(t)
            full = init_many_([(torch.empty(record.shape, dtype=local.dtype, device=local.device),
                                record.spec)], seed=self.session.seed)[0]
            values = torch.empty(record.total, dtype=full.dtype, device=full.device)
            values[positions(record.skeleton).reshape(-1).to(full.device)] = full.reshape(-1)
            o, n = record.index[key]
            with torch.no_grad():
                local.view(-1).copy_(values[o:o + n])


def tensors_of(args, kwargs):
    """The tensors among an aten op's arguments: aten schemas take tensors directly or in one
    flat list (Tensor[], Tensor?[]), so no tree walk is needed."""
    yield from _tensors_in(args)
    if kwargs:
        yield from _tensors_in(kwargs.values())


def _tensors_in(values):
    for a in values:
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for x in a:
                if isinstance(x, torch.Tensor):
                    yield x
