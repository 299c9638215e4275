"""Recording a constructor for deferred_init: the dispatch modes and registration hooks that
run while `fn(*args, **kwargs)` builds a module.

- `WriteTracker`: the storages that ops which really run write (an unrecordable op on a
  parameter makes it unrecorded).
- `ConstructionTracker`: ruled tensors (constructor_values.py) - factories on meta, their
  affine images, whole copies and views, parts and `cat`s of parts of an elementwise rule (a
  split master weight); realizing one when anything else uses it; taint of
  values drawn with torch's generator; copies of recorded tensors (same values).
- `LiveTensors`: what must happen before dispatch (torch's trunc_normal_ sees the
  constructor's tensors as live; index assignment and data reads get real values; factories
  for devices this machine lacks run for the CPU).
- `Construction`: names every tensor the constructor registers (provisionally), moves
  parameters to meta, realizes buffers, keeps real values registered without a draw.
"""
from __future__ import annotations

import contextvars
import sys
from typing import Dict, List, Optional, Set, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from . import constructor_values as values
from .engine import is_view
from .queue import local_tensor, storage_of, tensor_key
from ..ops.sharding import is_dtensor
from ..torch_internals import (frame_takes_rejection_branch, outside_dispatch_modes,
                               trunc_normal_code)

aten = torch.ops.aten

# The construction this context (thread / task) is running under deferred_init, if any: the
# registration hooks torch offers are process-wide, so they act only where this is set.
building: contextvars.ContextVar[Optional["Construction"]] = contextvars.ContextVar(
    "fusedinit_deferred_construction", default=None)


_PIN_BYTES = 16 << 20


class WriteTracker(TorchDispatchMode):
    """The storages every op that actually runs writes to (arguments its schema marks as
    written: in-place ops, out=, the fusedinit op itself). It sits outside the engine's
    interceptor, so writes the engine queued reach it only when the queue is written."""

    def __init__(self):
        super().__init__()
        self.written: Set[int] = set()

    def note(self, t: torch.Tensor) -> None:
        """`t`'s storage is recorded by its identity (overridden to keep it alive)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        schema = func._schema
        for i, arg in enumerate(schema.arguments):
            info = arg.alias_info
            if info is None or not info.is_write:
                continue
            value = args[i] if i < len(args) else kwargs.get(arg.name)
            for t in tree_leaves(value):
                if isinstance(t, torch.Tensor):
                    s = storage_of(t)
                    if s is not None:
                        self.written.add(s)
                        self.note(t)
        return func(*args, **kwargs)


class ConstructionTracker(WriteTracker):
    """Also follows copies of recorded meta tensors: `copy.deepcopy` of a registered layer (as
    nn.TransformerEncoder clones its layer) or `dest.copy_(src)` make a tensor that holds what
    the source held - on meta, its recorded rule, written on the source's stream, so the copy
    holds the source's values as torch's copy does (MoCo / EMA / teacher models, a cloned
    encoder layer), until a write of its own replaces them."""

    def __init__(self):
        super().__init__()
        self.session = self.construction = None  # set once the recording is open
        # Ruled tensors (constructor_values.py), by storage: (dtype, requested device, the
        # key of the tensor the rule was made for). A whole view shares its entry.
        self.ruled: Dict[int, Tuple[torch.dtype, torch.device, tuple]] = {}
        # Storages holding values realized from a draw or from `empty`, or computed from them.
        self.tainted: Set[int] = set()
        # Meta storage of a realized ruled tensor -> its real value (the whole storage): every
        # later use of that tensor or of a view of it takes the same view of the real value.
        self.realized: Dict[int, torch.Tensor] = {}
        self.parameters: Set[int] = set()  # storages registered as parameters: never realized
        # The storage of every tensor whose identity a table above holds, pinned until the
        # constructor returns: a storage's identity is its address, which a freed temporary
        # (Megatron's `master.to(params_dtype)`) hands on to the next tensor made - a parameter
        # would then take the temporary's entries (its "written by an op", its rule). Meta
        # storages cost nothing; real ones are pinned up to _PIN_BYTES (see note()).
        self.alive: Dict[int, torch.UntypedStorage] = {}

    def note(self, t: torch.Tensor) -> None:
        """Pin `t`'s storage (not `t`: `p.data = ...` would let it go). Real storages over
        _PIN_BYTES are not pinned - a constructor's large real temporaries must not pile up;
        were one's address reused, the new tensor would be named by materialize_, not
        written wrongly (the tables real storages are in only ever make a tensor unrecorded)."""
        s = storage_of(t)
        if s is None or s in self.alive:
            return
        storage = local_tensor(t).untyped_storage()
        if t.device.type == "meta" or storage.nbytes() <= _PIN_BYTES:
            self.alive[s] = storage

    def _inherit(self, dest: torch.Tensor, src: torch.Tensor) -> None:
        names, written = self.construction.names, self.session.written
        source = names.get(tensor_key(src))
        self.construction.name(dest)
        target = names[tensor_key(dest)]
        if source in written:
            written[target] = written[source]
            # A copy holds its source's values: the same spec on the source's stream.
            self.construction.copies[target] = self.construction.copies.get(source, source)
        else:
            written.pop(target, None)
            self.construction.copies.pop(target, None)
        if storage_of(src) in self.written or source not in written:
            self.written.add(storage_of(dest))
        else:
            self.written.discard(storage_of(dest))

    # -- ruled tensors ----------------------------------------------------------------------
    def _rule(self, t: torch.Tensor):
        """The rule a ruled tensor follows now: its pending write, else its last written one,
        else UNSET; None for an unfinished chain (no rule: it is realized as `empty`)."""
        return self._rule_of_key(tensor_key(t))

    def _rule_of_key(self, key: tuple):
        p = self.session.pending.get(key)
        if p is not None:
            return None if p.ops else p.spec
        name = self.construction.names.get(key)
        return self.session.written.get(name, values.UNSET) if name is not None else values.UNSET

    def _ruled_entry(self, t):
        if isinstance(t, torch.Tensor) and t.device.type == "meta":
            return self.ruled.get(storage_of(t))
        return None

    def realized_or_real(self, t):
        """`t` as it holds data: a ruled tensor (not a parameter) is realized first."""
        if self._ruled_entry(t) is not None and storage_of(t) not in self.parameters:
            return self.realize(t)
        return self.real_view(t)

    def real_view(self, t):
        """`t` itself, or for a realized ruled tensor (or a view of it) the same view of its
        real value."""
        if isinstance(t, torch.Tensor) and t.device.type == "meta" and self.realized:
            real = self.realized.get(storage_of(t))
            if real is not None:
                return real.as_strided(t.shape, t.stride(), t.storage_offset())
        return t

    def _make_ruled(self, out: torch.Tensor, rule, dtype: torch.dtype,
                    device: torch.device) -> None:
        self.ruled[storage_of(out)] = (dtype, device, tensor_key(out))
        self.note(out)
        if rule is values.UNSET or rule is None:
            return
        self.session.queue(out, rule)  # named by the watcher, replaced by later writes

    def realize(self, t: torch.Tensor) -> torch.Tensor:
        """The real value of the ruled tensor whose storage `t` views (computed now, once),
        as `t` views it."""
        storage = storage_of(t)
        self.note(t)
        dtype, device, key = self.ruled.pop(storage)
        rule = self._rule_of_key(key)
        if key in self.session.pending:
            self.session.drop_key(key)
        with outside_dispatch_modes():
            real = values.realize(rule if rule is not None else values.UNSET,
                                  key[4:4 + (len(key) - 4) // 2], dtype, device)
        self.realized[storage] = real
        if rule is None or values.draws(rule):
            self.tainted.add(storage_of(real))
        return self.real_view(t)

    def _ruled_op(self, func, args, kwargs):
        """(handled, result) for an op on ruled tensors: a factory makes one, scalar arithmetic
        or a whole copy makes one from one, a whole view shares one; any other op realizes the
        ruled tensors it takes first (and is then run by the caller)."""
        made = values.factory_rule(func, args, kwargs)
        if made is not None:
            rule, dtype, device = made
            out = func(*args, **{**kwargs, "device": torch.device("meta")})
            self._make_ruled(out, rule, dtype, device)
            return True, out
        src = args[0] if args else None
        entry = self._ruled_entry(src)
        if entry is not None and storage_of(src) in self.parameters:
            # A registered parameter's value is its record's: a whole copy of it is a copy
            # (written on its stream, below); anything computed from it stays on meta, and a
            # buffer so made is named by materialize_ rather than computed from other values.
            entry = None
        if entry is not None and whole_meta(src):
            rule = self._rule(src)
            new = values.affine_rule(func, args, kwargs, rule, src.dtype) \
                if rule is not None else None
            if new is not None:
                out = func(*args, **kwargs)
                if isinstance(out, torch.Tensor) and out.dtype.is_floating_point:
                    self._make_ruled(out, new, out.dtype, entry[1])
                return True, out
            if func in (aten.clone.default, aten._to_copy.default) and rule is not None:
                device = kwargs.get("device") or entry[1]
                out = func(*args, **{**kwargs, "device": torch.device("meta")}
                           if "device" in kwargs else kwargs)
                if isinstance(out, torch.Tensor) and out.dtype.is_floating_point:
                    new = values.cast_rule(rule, src.dtype, out.dtype)
                    if new is not None:
                        self._make_ruled(out, new, out.dtype, torch.device(device))
                        return True, out
                # not a rule in its dtype: computed from the real value (realized below)
            if is_view(func):
                out = func(*args, **kwargs)
                if isinstance(out, torch.Tensor) and out.numel() == src.numel() \
                        and out.is_contiguous():
                    return True, out  # shares the storage, and so the entry
                if values.elementwise(rule):
                    # Parts (`torch.split` of a master weight, as Megatron's CPU init does):
                    # each element follows the rule alone, so a part does too - it shares the
                    # storage's entry; a `cat` of parts of one rule is a tensor of that rule.
                    return True, out
                # a part of it: taken from the real value (realized below)
        if func is aten.cat.default and args and isinstance(args[0], (list, tuple)):
            out = self._cat_of_parts(func, args, kwargs)
            if out is not None:
                return True, out
        if func is aten.copy_.default and len(args) == 2 and whole_meta(src) \
                and storage_of(src) in self.parameters and self._ruled_entry(args[1]) is not None \
                and storage_of(args[1]) not in self.parameters \
                and whole_meta(args[1]) and src.shape == args[1].shape:
            # `weight.data.copy_(value)` of a ruled value into a registered parameter: the
            # parameter takes the rule, on its own stream (the value is a temporary).
            rule = self._rule_of_key(self._ruled_entry(args[1])[2])
            if values.elementwise(rule):
                self.session.queue(src, values.cast_rule(rule, args[1].dtype, src.dtype) or rule)
                return True, src
        if func is aten.copy_.default and entry is not None and len(args) == 2 \
                and isinstance(args[1], torch.Tensor) and storage_of(args[1]) in self.parameters \
                and whole_meta(src) and src.shape == args[1].shape:
            self.ruled.pop(storage_of(src))  # a whole copy of a parameter: a copy (below)
            return False, None
        for t in tree_leaves((args, kwargs)):
            if self._ruled_entry(t) is not None and storage_of(t) not in self.parameters:
                self.realize(t)
        return False, None

    def _cat_of_parts(self, func, args, kwargs) -> Optional[torch.Tensor]:
        """A `cat` of ruled tensors (or parts of them) that all follow one elementwise rule:
        a ruled tensor of that rule (on meta); None otherwise."""
        parts = args[0]
        entries = [self._ruled_entry(t) for t in parts]
        if not parts or any(e is None or storage_of(t) in self.parameters
                            for e, t in zip(entries, parts)):
            return None
        rules = {values.without_stream(self._rule_of_key(e[2])) for e in entries}
        dtypes = {t.dtype for t in parts}
        if len(rules) != 1 or len(dtypes) != 1 or not values.elementwise(next(iter(rules))):
            return None
        out = func(*args, **kwargs)
        self._make_ruled(out, next(iter(rules)), out.dtype, entries[0][1])
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.construction is None:
            return super().__torch_dispatch__(func, types, args, kwargs)
        handled, out = self._ruled_op(func, args, kwargs)
        if handled:
            return out
        if kwargs.get("device") is not None and values.here(kwargs["device"]) != kwargs["device"]:
            kwargs = {**kwargs, "device": values.here(kwargs["device"])}
        if self.realized:
            args, kwargs = tree_map(self.real_view, (args, kwargs))
        if torch.Tag.nondeterministic_seeded in func.tags or self.tainted and any(
                isinstance(t, torch.Tensor) and storage_of(t) in self.tainted
                for t in tree_leaves((args, kwargs))):
            # a draw with torch's generator (bernoulli, randint, randperm, normal of tensors),
            # or a value computed from one
            out = self._inner(func, types, args, kwargs)
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.tainted.add(storage_of(t))
                    self.note(t)
            return out
        return self._inner(func, types, args, kwargs)

    def _inner(self, func, types, args, kwargs):
        names = self.construction.names
        if func in (aten.clone.default, aten._to_copy.default) and args \
                and whole_meta(args[0]) and tensor_key(args[0]) in names:
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor) and whole_meta(out) and out.shape == args[0].shape:
                self._inherit(out, args[0])
            return out
        if func is aten.copy_.default and len(args) >= 2 and whole_meta(args[0]) \
                and whole_meta(args[1]) and tensor_key(args[1]) in names \
                and args[0].shape == args[1].shape:
            out = func(*args, **kwargs)
            self._inherit(args[0], args[1])
            return out
        return super().__torch_dispatch__(func, types, args, kwargs)


class LiveTensors(TorchFunctionMode):
    """While a constructor runs, torch's `nn.init.trunc_normal_` sees the constructor's own
    tensors as not meta (they stand for the real tensors the constructor would have made), so
    it issues its ops and the engine records them as one truncated normal. Only that function
    is answered (its frame is the getter's caller) and only when the engine can fold the branch
    it takes; everything else sees the truth. A narrow interval (<= 30% of the mass) stays
    unrecorded: materialize_ names the parameter unless `init=` covers it. The same holds for
    an init pass recorded on meta parameters (record_on_meta_)."""

    def __init__(self, names: Dict[tuple, str],
                 tracker: Optional["ConstructionTracker"] = None):
        super().__init__()
        self.names = names  # the recording's table: the tensors that are the module's own
        self.tracker = tracker  # deferred_init's: ruled tensors (constructor_values.py)

    def _stands_for_real(self, t) -> bool:
        """One of the module's tensors, or a tensor the constructor made with a factory (a
        master weight `torch.empty(...)` that `init_method` then fills): named at its first
        write, so not yet in `names` when trunc_normal_ asks."""
        if tensor_key(t) in self.names:
            return True
        tracker = self.tracker
        return tracker is not None and tracker._ruled_entry(t) is not None \
            and storage_of(t) not in tracker.parameters

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__self__", None) is torch.Tensor.is_meta and len(args) == 1 \
                and self._stands_for_real(args[0]):
            caller = sys._getframe(1)
            if caller.f_code is trunc_normal_code() and frame_takes_rejection_branch(caller):
                return False
        if kwargs and kwargs.get("device") is not None:
            # A factory for a device this machine lacks ("cuda" without a GPU) would fail
            # before any dispatch: it runs for the CPU (a parameter's value is on meta anyway).
            # So does one for "meta" that follows a ruled tensor (`device=z.device`): data
            # given to it (`torch.tensor(..)`, `arange`) must not be dropped.
            asked = torch.device(kwargs["device"])
            here = values.here(asked) if asked.type != "meta" or self.tracker is None \
                else torch.device("cpu")
            if here.type != asked.type and func not in _META_KEEPING:
                kwargs = {**kwargs, "device": here}
        if self.tracker is not None and func in _READS_OUTSIDE_DISPATCH and (
                func is not torch.Tensor.__getitem__ or _advanced_index(args[1:])) \
                and not _elsewhere(func, kwargs):
            # These read or write a tensor's data (or make tensors on its device) before any
            # dispatch: a ruled tensor is realized and they run on its real value.
            args = tuple(self.tracker.realized_or_real(a) for a in args)
        return func(*args, **(kwargs or {}))


# Tensor methods that touch data, or make tensors on `self.device`, in C++ before the
# dispatcher: indexing assignment builds its index / value tensors on the target's device.
_READS_OUTSIDE_DISPATCH = frozenset({
    torch.Tensor.__setitem__, torch.Tensor.__getitem__, torch.Tensor.tolist,
    torch.Tensor.numpy, torch.Tensor.__array__, torch.Tensor.new_tensor,
    torch.Tensor.index_put_, torch.Tensor.index_put, torch.Tensor.masked_fill_,
    torch.Tensor.masked_fill})
def _elsewhere(func, kwargs) -> bool:
    """`t.new_tensor(x, device=d)` for a real device d takes only `t`'s dtype (torch's
    trunc_normal_ rounds its bounds so on a master weight Megatron's init_method fills)."""
    device = kwargs.get("device") if kwargs else None
    return func is torch.Tensor.new_tensor and device is not None \
        and torch.device(device).type != "meta"


def _advanced_index(index) -> bool:
    """Whether an indexing key holds lists or tensors (then torch builds index tensors on the
    indexed tensor's device); ints, slices, None and Ellipsis make a view."""
    return any(isinstance(x, (list, torch.Tensor)) or isinstance(x, tuple) and _advanced_index(x)
               for x in index)


# Functions that move a tensor to meta on purpose (deferred_init's own parameter move).
_META_KEEPING = frozenset({torch.Tensor.to, torch.Tensor.new_empty, torch.empty_like})


class Construction:
    """Names every tensor a constructor registers (provisionally: the module has no names
    yet) so the engine queues its init writes, and moves parameters to the meta device."""

    def __init__(self, names: Dict[tuple, str], tracker: "ConstructionTracker"):
        self.names = names
        self.tracker = tracker
        # Every registered tensor stays referenced while recording, so no storage id is reused
        # by a later tensor while its provisional name is in the table.
        self.tensors: List[torch.Tensor] = []
        # Provisional name of a whole copy (`copy_`, `clone`, `copy.deepcopy`) -> its source's:
        # the copy is written with the source's stream, so it holds the source's values.
        self.copies: Dict[str, str] = {}
        # Storage of a parameter's meta stand-in -> the real value it was registered with
        # (computed without a draw), or None when that value came from a draw (tainted).
        self.registered_real: Dict[int, Optional[torch.Tensor]] = {}

    def name(self, t: torch.Tensor) -> None:
        key = tensor_key(t)
        if key is not None and key not in self.names:
            self.names[key] = f"<constructor tensor {len(self.tensors)}>"
            self.tensors.append(t)
            self.tracker.note(t)  # its storage, even after `t.data = ...`

    def whole_view_name(self, t: torch.Tensor) -> Optional[str]:
        """The name of the ruled tensor `t` is a whole contiguous view of, if any."""
        entry = self.tracker.ruled.get(storage_of(t))
        return self.names.get(entry[2]) if entry is not None and whole_meta(t) else None

    def on_parameter(self, module, name, param):
        if building.get() is not self or param is None:
            return None
        replaced = None
        value = self.tracker.real_view(param)
        if value.device.type != "meta" and not is_dtensor(param):
            tainted = storage_of(value) in self.tracker.tainted
            real = None if tainted else value.detach()
            param = replaced = on_meta(param)
            self.registered_real[storage_of(param)] = real
            self.tensors.append(param)
        self.tracker.parameters.add(storage_of(param))
        self.name(param)
        return replaced

    def on_buffer(self, module, name, buffer):
        if building.get() is not self or buffer is None:
            return None
        replaced = None
        if self.tracker._ruled_entry(buffer) is not None:  # buffers hold real values
            buffer = replaced = self.tracker.realize(buffer)
        elif self.tracker.real_view(buffer) is not buffer:
            buffer = replaced = self.tracker.real_view(buffer)
        self.name(buffer)
        return replaced


def on_meta(param: nn.Parameter) -> nn.Parameter:
    """A parameter of the same type and attributes as `param`, on the meta device."""
    replaced = type(param)(param.detach().to("meta"), requires_grad=param.requires_grad)
    replaced.__dict__.update(param.__dict__)
    return replaced


def whole_meta(t: torch.Tensor) -> bool:
    t = t._local_tensor if is_dtensor(t) else t
    return (t.device.type == "meta" and t.storage_offset() == 0 and t.is_contiguous()
            and t.numel() * t.element_size() == t.untyped_storage().nbytes())
