"""A queue of pending writes for one module: (tensor, spec) entries keyed by the tensor's memory,
each with the stream of its parameter's name, flushed as one `init_many_` call (one op call per
device). A later write to the same tensor replaces the pending one, so values that a model
overwrites during its own init pass are never computed.

The queue knows nothing about how writes are found (engine.py intercepts them) and holds no
global state: it is one object per recording, owned by whoever opened it."""
from __future__ import annotations

import dataclasses
import itertools
import math
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ..ops.api import init_many_
from ..ops.sharding import is_dtensor
from ..ops.specs import Constant, Normal, on_stream
from ..torch_internals import storage_address
from .places import Places, padding_row, placed_items
from .streams import param_stream


# Types that are never a DTensor: asked first, since every op asks.
_PLAIN_TYPES = frozenset({torch.Tensor, nn.Parameter})


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor is known by its local shard (the memory this rank writes)."""
    if type(t) in _PLAIN_TYPES:
        return t
    return t._local_tensor if is_dtensor(t) else t


def tensor_key(t: torch.Tensor) -> Optional[tuple]:
    """Identity of the memory a tensor covers: its storage object (shared by every alias,
    `.data` included, and distinct for distinct meta tensors too) and the region in it."""
    try:
        return _key_of(local_tensor(t))
    except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
        return None


def _key_of(t: torch.Tensor) -> tuple:
    # One flat tuple (shape and stride have the same length, so the length says where each
    # begins): a recording makes one per tensor, and nested tuples would be three.
    return (storage_address(t), t.storage_offset(), t.dtype, t.device, *t.shape, *t.stride())


def storage_of_key(key: tuple) -> int:
    """storage_of(t) for t's tensor_key(t), without asking the tensor again."""
    return key[0]


def storage_of(t: torch.Tensor) -> Optional[int]:
    """The identity of the storage `t` views (its StorageImpl's address: one per storage, on
    any device, meta included, for as long as the storage lives)."""
    t = local_tensor(t)
    try:
        return storage_address(t)
    except (RuntimeError, NotImplementedError):
        return None


def with_stream(spec, stream: int):
    """`spec` drawing from `stream`; a spec that draws nothing (Constant) has no stream and is
    returned as it is."""
    if _draws(spec):
        return on_stream(spec, stream)
    return spec


def _contiguous_strides(shape: tuple) -> tuple:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _flat_key(t: torch.Tensor) -> tuple:
    """The elements of a contiguous tensor, in order, regardless of its shape."""
    return (storage_address(t), t.storage_offset(), t.numel(), t.dtype, t.device)


_DRAWS: Dict[type, bool] = {}


def _draws(spec) -> bool:
    """Whether the spec's type has a stream (draws random numbers); asked once per type."""
    kind = type(spec)
    draws = _DRAWS.get(kind)
    if draws is None:
        draws = _DRAWS[kind] = "stream" in {f.name for f in dataclasses.fields(spec)}
    return draws


class DeferredOp(NamedTuple):
    """An op deferred on a pending tensor (the unfinished tail of a chain engine.py may still
    fold), replayed on the written values if the chain is not completed."""

    step: object  # what folding.py read from it: Erfinv(), Mul(k), Add(m), Clamp(lo, hi)
    func: Callable
    args: tuple
    kwargs: dict


@dataclasses.dataclass(slots=True)
class Pending:
    """One queued write: `spec` for `tensor`, then `ops` run on the written values."""

    tensor: torch.Tensor
    spec: object
    ops: Sequence[DeferredOp] = ()  # replaced, never appended to: no list per queued write


class InitSession:
    """Pending writes for the parameters and buffers of `root`, named `prefix` + their name."""

    def __init__(self, root: nn.Module, seed: int, prefix: str = "",
                 places: Optional[Places] = None):
        self.root, self.seed = root, seed
        # name -> the blocks of a global model it holds (places.py): written block by block,
        # each on its global tensor's stream at its global indices.
        self.places: Places = places or {}
        self.names: Dict[tuple, str] = {}
        # The module's own tensor objects (DTensors aside: they are found by their shard), as
        # columns: the engine's fast lane finds an op's tensor by identity (`id`, then `is`)
        # before it asks for its memory. Columns, not an object per tensor: a recording of
        # 10^5 parameters must not feed the garbage collector's full passes (each ~0.2 s
        # with torch loaded) - it adds no tracked object per tensor.
        self._own: Dict[int, int] = {}  # id(tensor object) -> its row in the columns below
        self._own_tensors: List[torch.Tensor] = []
        self._own_keys: List[tuple] = []
        self._own_names: List[str] = []
        self._own_floating: List[bool] = []
        # Its shape and strides at open (also in the key; kept as tuples to compare at once).
        self._own_views: List[Tuple[tuple, tuple]] = []
        # A contiguous view of a whole contiguous tensor (`weight.view(1, -1)`) covers the same
        # elements in the same order: a write to it is a write to the tensor. Built when first
        # needed (flat key -> row).
        self._flat: Optional[Dict[tuple, int]] = None
        for name, t in itertools.chain(root.named_parameters(remove_duplicate=True),
                                       root.named_buffers(remove_duplicate=True)):
            key = tensor_key(t)
            if key is not None and key not in self.names:
                self.names[key] = name = prefix + name
                if not is_dtensor(t):
                    self._own[id(t)] = len(self._own_tensors)
                    self._own_tensors.append(t)
                    self._own_keys.append(key)
                    self._own_names.append(name)
                    self._own_floating.append(t.is_floating_point())
                    self._own_views.append((tuple(t.shape), tuple(t.stride())))
        self.pending: Dict[tuple, Pending] = {}
        self._storages: Dict[int, int] = {}  # storages with pending writes -> count
        # name -> spec of every write flushed so far (meta tensors included, which init_many_
        # skips): what a recording on the meta device hands to a later, sharded write.
        self.written: Dict[str, object] = {}
        self.deferred_on_meta: List[str] = []
        # Pending writes to temporaries (tensors made during the recording, not the module's):
        # key -> label, whose param_stream is the temporary's stream (engine.py).
        self.temporaries: Dict[tuple, str] = {}
        self._streams: Dict[str, int] = {}  # name -> param_stream(name), asked once
        # (before, after) callbacks of queue(), while a `watching_queue` block is open.
        self._watchers: List[Tuple[Callable[[torch.Tensor], None],
                                   Callable[[torch.Tensor], None]]] = []

    @contextmanager
    def watching_queue(self, before: Callable[[torch.Tensor], None],
                       after: Callable[[torch.Tensor], None]) -> Iterator[None]:
        """Inside the block, every `queue(t, spec)` calls `before(t)` first (it may name `t`,
        through `names`, so that the write is queued) and `after(t)` once the write is queued.
        deferred_init names the tensors a constructor makes at their first write this way."""
        watcher = (before, after)
        self._watchers.append(watcher)
        try:
            yield
        finally:
            self._watchers.remove(watcher)

    # -- queue --------------------------------------------------------------------------------
    def name_of(self, t: torch.Tensor) -> Optional[str]:
        key = tensor_key(t)
        return None if key is None else self.names.get(key)

    def queue(self, t: torch.Tensor, spec, stream_name: Optional[str] = None) -> bool:
        """Queue `spec` for `t` (a whole parameter or buffer of the root), drawn on the stream
        of its name (or of `stream_name`'s: a copy of that tensor); False if `t` is not one.
        Integer buffers (BatchNorm's num_batches_tracked) take only constants, written at
        flush after the floating-point writes (the kernels fill floating types only)."""
        for before, _ in self._watchers:
            before(t)
        queued = self._queue_named(t, spec, stream_name)
        if queued:
            for _, after in self._watchers:
                after(t)
        return queued

    def _queue_named(self, t: torch.Tensor, spec, stream_name: Optional[str] = None) -> bool:
        key = tensor_key(t)
        if key is None:
            return False
        name = self.names.get(key)
        if name is None:
            row = self._flat_row(t)
            if row is None:
                return False
            # `t` covers the recorded tensor's elements in order: the write is that tensor's,
            # made through `t` viewed as it (the object may hold other memory by now).
            key, name = self._own_keys[row], self._own_names[row]
            t = t.view(self._own_views[row][0])
        spec = self._fitted(spec, t.is_floating_point(), stream_name or name)
        if spec is None:
            return False
        self._put(key, t, spec)
        return True

    def _fitted(self, spec, floating: bool, name: str):
        """`spec` as queued for a tensor whose stream is `name`'s: a draw on that stream (a
        constant has none: no name is hashed, ~1.5 us); None for a draw on an integer tensor
        (the kernels fill floating types only)."""
        if type(spec) is Constant:
            return spec
        return on_stream(spec, self._stream(name)) if floating and _draws(spec) else None

    def _flat_row(self, t: torch.Tensor) -> Optional[int]:
        """The row of the module's contiguous tensor whose elements the contiguous `t` covers,
        all and in order; or None."""
        if not t.is_contiguous() or is_dtensor(t):
            return None
        if self._flat is None:  # from the memory each tensor had when the recording opened
            self._flat = {}
            for row, (key, (shape, stride)) in enumerate(zip(self._own_keys, self._own_views)):
                if stride == _contiguous_strides(shape):
                    self._flat.setdefault((key[0], key[1], math.prod(shape), key[2], key[3]), row)
        return self._flat.get(_flat_key(t))

    def own_row(self, t) -> Optional[int]:
        """The row of `t` if it is one of the module's own tensor objects (not an alias)."""
        row = self._own.get(id(t))
        return row if row is not None and self._own_tensors[row] is t else None

    def queue_own(self, row: int, spec) -> bool:
        """queue(t, spec) for the module's own tensor object in `row` (the engine's fast lane):
        False, and nothing queued, if a watcher is open (queue() calls it), if the tensor's
        memory is no longer what the recording found (`.data` was replaced) or if the spec
        does not fit its dtype."""
        t, key = self._own_tensors[row], self._own_keys[row]
        shape, stride = self._own_views[row]
        # The same memory, seen the same way, as when the recording opened: `.data =` and
        # swap_tensors change it unseen by the dispatcher (keeping the storage, at times: `.data
        # = .data.t()`), as do `t_()` / `resize_()`. Read piece by piece, without a key tuple.
        if (self._watchers or storage_address(t) != key[0] or t.storage_offset() != key[1]
                or t.dtype != key[2] or t.shape != shape or t.stride() != stride):
            return False
        spec = self._fitted(spec, self._own_floating[row], self._own_names[row])
        if spec is None:
            return False
        self._put(key, t, spec)
        return True

    def _stream(self, name: str) -> int:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = param_stream(name)
        return stream

    def queue_temporary(self, t: torch.Tensor, spec, label: str) -> None:
        """Queue `spec` for the whole temporary `t` on the stream of `label`: written with the
        module's writes unless engine.py folds it into a parameter first (then dropped)."""
        key = tensor_key(t)
        self.temporaries[key] = label
        self._put(key, t, with_stream(spec, self._stream(label)))

    def _put(self, key: tuple, t: torch.Tensor, spec) -> None:
        """The pending write of `t` (key `key`) is now `spec`. The queue holds an alias of `t`
        (`t.detach()`): it keeps the memory alive and is written there, whatever the module's
        tensor object holds by then (`.data =` after the write was queued)."""
        if key not in self.pending:
            s = storage_of_key(key)
            self._storages[s] = self._storages.get(s, 0) + 1
        self.pending[key] = Pending(t.detach(), spec)

    def whole_temporary(self, t: torch.Tensor) -> Optional[tuple]:
        """The key of the pending temporary whose elements `t` covers, all and in order (the
        temporary itself or a contiguous view of all of it), with no deferred ops; or None."""
        s = storage_of(t)
        if s is None or s not in self._storages:
            return None
        local = local_tensor(t)
        for key in self.temporaries:
            p = self.pending.get(key)
            if p is None or p.ops or storage_of(p.tensor) != s:
                continue
            base = local_tensor(p.tensor)
            if local.is_contiguous() and local.storage_offset() == base.storage_offset() \
                    and local.numel() == base.numel() and local.dtype == base.dtype:
                return key
        return None

    def entry(self, t: torch.Tensor) -> Optional[Pending]:
        """The pending write of exactly `t` (same memory region), or None."""
        key = tensor_key(t)
        return None if key is None else self.pending.get(key)

    def zero_row(self, view: torch.Tensor) -> bool:
        """`view` is one whole row (dim 0) of a tensor with a pending Normal: make that row its
        padding row, written in the same pass. False if it is not."""
        s = storage_of(view)
        if s is None or s not in self._storages:
            return False
        for key, p in self.pending.items():
            t, spec = p.tensor, p.spec
            if (storage_of(t) != s or not isinstance(spec, Normal) or p.ops or t.dim() == 0
                    or tuple(view.shape) != tuple(t.shape[1:])
                    or tuple(view.stride()) != tuple(t.stride()[1:]) or t.stride(0) == 0):
                continue
            row, rem = divmod(view.storage_offset() - t.storage_offset(), t.stride(0))
            if rem == 0 and 0 <= row < t.shape[0]:
                return self.pad_row(t, row)
        return False

    def pad_row(self, t: torch.Tensor, row: int) -> bool:
        """Row `row` (dim 0) of `t`, which has a pending Normal, becomes its padding row."""
        p = self.entry(t)
        if p is None or not isinstance(p.spec, Normal) or p.ops:
            return False
        p.spec = dataclasses.replace(p.spec, padding_idx=row)
        return True

    def touches_pending(self, t: torch.Tensor) -> bool:
        s = storage_of(t)
        return s is not None and s in self._storages

    def drop(self, t: torch.Tensor) -> bool:
        """Forget the pending write of exactly `t` (about to be overwritten as a whole)."""
        key = tensor_key(t)
        if key is None or key not in self.pending:
            return False
        self.drop_key(key)
        return True

    def drop_key(self, key: tuple) -> None:
        p = self.pending.pop(key)
        self.temporaries.pop(key, None)
        s = storage_of(p.tensor)
        self._storages[s] -= 1
        if not self._storages[s]:
            del self._storages[s]

    def specs_by_name(self) -> Dict[str, object]:
        """The pending spec of each parameter / buffer, by fully qualified name."""
        return {self.names[key]: p.spec for key, p in self.pending.items() if key in self.names}

    def discard(self) -> None:
        """Forget every pending write (the recording failed: nothing is written)."""
        self.pending.clear()
        self._storages.clear()
        self.temporaries.clear()

    def only_temporaries(self, tensors) -> bool:
        """Every pending storage among `tensors` is a temporary's (no module tensor's)."""
        touched = {storage_of(t) for t in tensors if self.touches_pending(t)}
        return all(storage_of(p.tensor) not in touched for key, p in self.pending.items()
                   if key not in self.temporaries)

    def flush_temporaries(self) -> None:
        """Write the pending temporaries only (something reads one): the module's writes stay
        queued for the one op call at the end."""
        entries = {k: self.pending[k] for k in self.temporaries if k in self.pending}
        for k in entries:
            self.drop_key(k)
        self._write(entries)

    def flush(self) -> None:
        """Write everything pending: one init_many_ call (one op call per device), which checks
        every item before writing any; then the integer-buffer constants; then the deferred
        ops of unfinished chains, on the written values. Raises if the write fails - the
        modules are already marked initialized, so it must never be silent."""
        if not self.pending:
            return
        pending, self.pending = self.pending, {}
        self.discard()
        self._write(pending)

    def _write(self, pending: Dict[tuple, Pending]) -> None:
        """Write `pending` (taken off the queue), each entry to the memory it was queued for."""
        if not pending:
            return
        for key, p in pending.items():
            name = self.names.get(key)
            if name is not None:  # (a temporary has none)
                self.written[name] = p.spec
                if p.ops and p.tensor.device.type == "meta":
                    self.deferred_on_meta.append(name)
        floating, padded = [], []
        for key, p in pending.items():
            if p.tensor.is_floating_point():
                placed = (placed_items(self.places, self.names.get(key), p.tensor, p.spec)
                          if self.places else None)
                if placed is None:
                    floating.append((p.tensor, p.spec))
                else:
                    floating.extend(placed)
                    row = padding_row(p.spec)
                    if row is not None:
                        padded.append((p.tensor, row))
        with torch.no_grad():
            init_many_(floating, seed=self.seed)
            for t, row in padded:  # a placed tensor's padding row is a local row
                t[row].zero_()
            for p in pending.values():
                if not p.tensor.is_floating_point():
                    p.tensor.fill_(p.spec.value)
            for p in pending.values():
                for op in p.ops:
                    op.func(*op.args, **op.kwargs)
