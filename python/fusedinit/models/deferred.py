"""`deferred_init` and `materialize_`: build any nn.Module without allocating its parameters,
then allocate them on the target device and initialize everything in one fused pass.

`deferred_init(fn, ...)` runs the constructor with every parameter moved to the meta device as
it is registered, while the engine (engine.py) records the init writes the constructor makes -
`reset_parameters()` in torch's modules, `_reset_parameters()` in nn.MultiheadAttention and
nn.Transformer, timm's `init_weights`, anything built from normal_ / uniform_ / fill_ / zero_
and the trunc_normal_ chains the engine folds. Buffers are computed for real (they are small
and often not made by init ops: rotary tables, BatchNorm statistics). What a constructor does
that cannot be recorded on meta (an op on drawn values that is no init write: `div_` after
`normal_`, `orthogonal_`'s QR) is remembered per parameter, so materializing it is an error
naming it unless later init code overwrites it.

`materialize_(module, device=...)` allocates the module on `device` (`to_empty`; real buffers
are kept), then writes - in one recording, so one op call per device - the recorded constructor
init, then `init(module)` when given (later writes replace earlier ones, as they would had
everything run for real), else, for a module that did not come from `deferred_init`, each
submodule's public `reset_parameters()`. A parameter or buffer that nothing initialized is an
error naming it: uninitialized memory is never handed back. Streams are the fully qualified
names in the module handed to `materialize_` (sharding with FSDP2 / tensor parallelism in
between keeps them), so the values do not depend on the layout."""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import sys
from typing import (Callable, ContextManager, Dict, Iterator, List, Optional, Set, Tuple,
                    TypeVar)

import torch
from torch import nn
from torch.nn.modules.module import (register_module_buffer_registration_hook,
                                     register_module_parameter_registration_hook)
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

from ..ops.seed import resolve_seed
from . import constructor_values as values
from .engine import is_view, recording
from .queue import InitSession, storage_of, tensor_key
from ..ops.sharding import is_dtensor
from ..torch_internals import (frame_takes_rejection_branch, outside_dispatch_modes,
                               trunc_normal_code)

aten = torch.ops.aten
M = TypeVar("M", bound=nn.Module)

# The construction this context (thread / task) is running under deferred_init, if any: the
# registration hooks torch offers are process-wide, so they act only where this is set.
_building: contextvars.ContextVar[Optional["_Construction"]] = contextvars.ContextVar(
    "fusedinit_deferred_construction", default=None)

_RECORD_ATTR = "_fusedinit_deferred"


@dataclasses.dataclass
class DeferredRecord:
    """What `deferred_init` learned from a constructor, by fully qualified name."""

    specs: Dict[str, object]        # the last init write of each parameter / buffer
    unrecorded: Dict[str, str]      # name -> why its constructor init could not be recorded
    # name -> the real value a parameter was registered with, computed without any draw
    # (`torch.tensor(2.5)`, `torch.arange(n).float()`): written as it is
    values: Dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    # name -> the name whose values it is a copy of (written on that name's stream)
    copies: Dict[str, str] = dataclasses.field(default_factory=dict)


class _WriteTracker(TorchDispatchMode):
    """The storages every op that actually runs writes to (arguments its schema marks as
    written: in-place ops, out=, the fusedinit op itself). It sits outside the engine's
    interceptor, so writes the engine queued reach it only when the queue is written."""

    def __init__(self):
        super().__init__()
        self.written: Set[int] = set()

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
        return func(*args, **kwargs)


class _ConstructionTracker(_WriteTracker):
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
        if rule is values.UNSET or rule is None:
            return
        self.session.queue(out, rule)  # named by the watcher, replaced by later writes

    def realize(self, t: torch.Tensor) -> torch.Tensor:
        """The real value of the ruled tensor whose storage `t` views (computed now, once),
        as `t` views it."""
        storage = storage_of(t)
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
        if entry is not None and _whole_meta(src):
            rule = self._rule(src)
            new = values.affine_rule(func, args, kwargs, rule, src.dtype) \
                if rule is not None else None
            if new is not None:
                out = func(*args, **kwargs)
                if isinstance(out, torch.Tensor) and out.dtype.is_floating_point:
                    self._make_ruled(out, new, out.dtype, entry[1])
                    return True, out
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
                # a part of it: taken from the real value (realized below)
        if func is aten.copy_.default and entry is not None and len(args) == 2 \
                and isinstance(args[1], torch.Tensor) and storage_of(args[1]) in self.parameters \
                and _whole_meta(src) and src.shape == args[1].shape:
            self.ruled.pop(storage_of(src))  # a whole copy of a parameter: a copy (below)
            return False, None
        for t in tree_leaves((args, kwargs)):
            if self._ruled_entry(t) is not None and storage_of(t) not in self.parameters:
                self.realize(t)
        return False, None

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
            return out
        return self._inner(func, types, args, kwargs)

    def _inner(self, func, types, args, kwargs):
        names = self.construction.names
        if func in (aten.clone.default, aten._to_copy.default) and args \
                and _whole_meta(args[0]) and tensor_key(args[0]) in names:
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor) and _whole_meta(out) and out.shape == args[0].shape:
                self._inherit(out, args[0])
            return out
        if func is aten.copy_.default and len(args) >= 2 and _whole_meta(args[0]) \
                and _whole_meta(args[1]) and tensor_key(args[1]) in names \
                and args[0].shape == args[1].shape:
            out = func(*args, **kwargs)
            self._inherit(args[0], args[1])
            return out
        return super().__torch_dispatch__(func, types, args, kwargs)


class _LiveTensors(TorchFunctionMode):
    """While a constructor runs, torch's `nn.init.trunc_normal_` sees the constructor's own
    tensors as not meta (they stand for the real tensors the constructor would have made), so
    it issues its ops and the engine records them as one truncated normal. Only that function
    is answered (its frame is the getter's caller) and only when the engine can fold the branch
    it takes; everything else sees the truth. A narrow interval (<= 30% of the mass) stays
    unrecorded: materialize_ names the parameter unless `init=` covers it. The same holds for
    an init pass recorded on meta parameters (record_on_meta_)."""

    def __init__(self, names: Dict[tuple, str],
                 tracker: Optional["_ConstructionTracker"] = None):
        super().__init__()
        self.names = names  # the recording's table: the tensors that are the module's own
        self.tracker = tracker  # deferred_init's: ruled tensors (constructor_values.py)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__self__", None) is torch.Tensor.is_meta and len(args) == 1 \
                and tensor_key(args[0]) in self.names:
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
                func is not torch.Tensor.__getitem__ or _advanced_index(args[1:])):
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
def _advanced_index(index) -> bool:
    """Whether an indexing key holds lists or tensors (then torch builds index tensors on the
    indexed tensor's device); ints, slices, None and Ellipsis make a view."""
    return any(isinstance(x, (list, torch.Tensor)) or isinstance(x, tuple) and _advanced_index(x)
               for x in index)


# Functions that move a tensor to meta on purpose (deferred_init's own parameter move).
_META_KEEPING = frozenset({torch.Tensor.to, torch.Tensor.new_empty, torch.empty_like})


class _Construction:
    """Names every tensor a constructor registers (provisionally: the module has no names
    yet) so the engine queues its init writes, and moves parameters to the meta device."""

    def __init__(self, names: Dict[tuple, str], tracker: "_ConstructionTracker"):
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

    def whole_view_name(self, t: torch.Tensor) -> Optional[str]:
        """The name of the ruled tensor `t` is a whole contiguous view of, if any."""
        entry = self.tracker.ruled.get(storage_of(t))
        if entry is None or not t.is_contiguous() or t.storage_offset() != 0:
            return None
        base = entry[2]
        return self.names.get(base) if t.numel() * t.element_size() == \
            t.untyped_storage().nbytes() else None

    def on_parameter(self, module, name, param):
        if _building.get() is not self or param is None:
            return None
        replaced = None
        value = self.tracker.real_view(param)
        if value.device.type != "meta" and not is_dtensor(param):
            tainted = storage_of(value) in self.tracker.tainted
            real = None if tainted else value.detach()
            param = replaced = _on_meta(param)
            self.registered_real[storage_of(param)] = real
            self.tensors.append(param)
        self.tracker.parameters.add(storage_of(param))
        self.name(param)
        return replaced

    def on_buffer(self, module, name, buffer):
        if _building.get() is not self or buffer is None:
            return None
        replaced = None
        if self.tracker._ruled_entry(buffer) is not None:  # buffers hold real values
            buffer = replaced = self.tracker.realize(buffer)
        elif self.tracker.real_view(buffer) is not buffer:
            buffer = replaced = self.tracker.real_view(buffer)
        self.name(buffer)
        return replaced


def _on_meta(param: nn.Parameter) -> nn.Parameter:
    """A parameter of the same type and attributes as `param`, on the meta device."""
    replaced = type(param)(param.detach().to("meta"), requires_grad=param.requires_grad)
    replaced.__dict__.update(param.__dict__)
    return replaced


def _whole_meta(t: torch.Tensor) -> bool:
    t = t._local_tensor if is_dtensor(t) else t
    return (t.device.type == "meta" and t.storage_offset() == 0 and t.is_contiguous()
            and t.numel() * t.element_size() == t.untyped_storage().nbytes())


def _named_tensors(module: nn.Module) -> Iterator[Tuple[str, torch.Tensor, bool]]:
    """(name, tensor, is_parameter) for each distinct parameter and buffer (first name wins, as
    in the engine's naming)."""
    for name, p in module.named_parameters(remove_duplicate=True):
        yield name, p, True
    for name, b in module.named_buffers(remove_duplicate=True):
        yield name, b, False


def deferred_init(fn: Callable[..., M], *args, **kwargs) -> M:
    """`fn(*args, **kwargs)` (a module class or any function returning an nn.Module) with its
    parameters on the meta device - nothing allocated for them, no random numbers drawn - and
    the init writes its constructor makes recorded per parameter, for `materialize_`. Buffers
    are computed for real on the device the constructor puts them on."""
    if not callable(fn):
        raise TypeError(f"fn must be callable (a module class or a function returning one), "
                        f"got {type(fn).__name__}")
    holder = nn.Module()  # the recording's root: the constructor's tensors are named as they come
    # The tracker sits outside the engine's interceptor: it sees only ops that really run, and
    # a copy after the interceptor has flushed the source's rule into session.written (a read
    # of a queued tensor is a barrier).
    tracker = _ConstructionTracker()
    with tracker, recording(holder, seed=0) as session:
        construction = _Construction(session.names, tracker)
        tracker.session, tracker.construction = session, construction

        def name_new(t: torch.Tensor) -> None:
            # Tensors that never went through registration (copy.deepcopy of a registered
            # layer, as nn.TransformerEncoder clones its layers) are named at their first write;
            # only meta tensors that are a whole storage - a view's write must stay a barrier.
            if _whole_meta(t):
                construction.name(t)

        def queued(t: torch.Tensor) -> None:
            # A whole-tensor write queued after an unrecordable op replaces its result, and a
            # copy's values with its own.
            tracker.written.discard(storage_of(t))
            construction.copies.pop(construction.names.get(tensor_key(t)), None)

        token = _building.set(construction)
        hooks = [register_module_parameter_registration_hook(construction.on_parameter),
                 register_module_buffer_registration_hook(construction.on_buffer)]
        try:
            with session.watching_queue(name_new, queued), \
                    _LiveTensors(session.names, tracker):
                module = fn(*args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
            _building.reset(token)
        if not isinstance(module, nn.Module):
            raise TypeError(f"fn must return an nn.Module, got {type(module).__name__}")
    _attach(module, _collect(module, session, tracker.written, "its constructor", construction))
    return module


def _attach(module: nn.Module, record: DeferredRecord) -> None:
    """The record goes on the module and, by their own names, on each of its submodules: a
    submodule materialized alone (`materialize_(model.layer)`) finds its part."""
    for prefix, sub in module.named_modules(remove_duplicate=True):
        if not prefix:
            sub.__dict__[_RECORD_ATTR] = record
            continue
        cut, lead = len(prefix) + 1, prefix + "."
        part = [{k[cut:]: v for k, v in table.items() if k.startswith(lead)}
                for table in (record.specs, record.unrecorded, record.values)]
        copies = {k[cut:]: v[cut:] for k, v in record.copies.items()
                  if k.startswith(lead) and v.startswith(lead)}
        sub.__dict__[_RECORD_ATTR] = DeferredRecord(*part, copies)


def _gathered_record(module: nn.Module) -> Optional[DeferredRecord]:
    """The records on `module` and its submodules (a deferred model put in a container), by
    names in `module`; an outer record's entry wins over an inner one's."""
    found = [(prefix, r) for prefix, sub in module.named_modules(remove_duplicate=True)
             if (r := deferred_record(sub)) is not None]
    if not found:
        return None
    tables: List[dict] = [{}, {}, {}, {}]
    for prefix, r in found:
        lead = prefix + "." if prefix else ""
        for table, part in zip(tables, (r.specs, r.unrecorded, r.values)):
            for k, v in part.items():
                table.setdefault(lead + k, v)
        for k, v in r.copies.items():
            tables[3].setdefault(lead + k, lead + v)
    return DeferredRecord(*tables)


def _collect(module: nn.Module, session: InitSession, written_storages: Set[int],
             who: str, construction: Optional[_Construction] = None) -> DeferredRecord:
    """The record of a recording on `module`'s tensors (named in `session` provisionally or
    finally): each tensor's last init write, by its name in `module`; tensors that ops other
    than init writes wrote (`written_storages`) are unrecorded, unless they are real buffers,
    whose computed values are kept."""
    specs: Dict[str, object] = {}
    unrecorded: Dict[str, str] = {}
    kept: Dict[str, torch.Tensor] = {}
    final: Dict[str, str] = {}  # provisional name -> name in module (first name wins)
    for name, t, is_param in _named_tensors(module):
        recorded_as = session.names.get(tensor_key(t))
        if construction is not None:
            if recorded_as not in session.written:  # a whole view of a ruled tensor
                recorded_as = construction.whole_view_name(t) or recorded_as
            real = construction.registered_real.get(storage_of(t), False)
            if real is None and recorded_as not in session.written:
                unrecorded[name] = (f"{who} computed it from values drawn with torch's "
                                    "generator by ops fusedinit cannot record (only scalar "
                                    "arithmetic on a factory's or an init write's values is)")
                continue
            if real is not False and real is not None:
                kept[name] = real
        if recorded_as is None:
            continue
        if storage_of(t) in written_storages:
            if is_param or t.device.type == "meta":
                unrecorded[name] = (f"{who} ran ops on it that are not init writes fusedinit "
                                    "can record on the meta device")
            continue  # a real buffer: its computed value is kept
        if recorded_as in session.written:
            specs[name] = session.written[recorded_as]
            final[recorded_as] = name
    copies: Dict[str, str] = {}
    if construction is not None:
        for provisional, name in final.items():
            source = construction.copies.get(provisional)
            if source is not None and final.get(source, name) != name:
                copies[name] = final[source]
    return DeferredRecord(specs, unrecorded, kept, copies)


def record_on_meta_(module: nn.Module, init: Callable[[nn.Module], object], *,
                    buffer_device: torch.device) -> DeferredRecord:
    """What `deferred_init` does for a constructor, for an init pass run after construction
    (transformers' `initialize_weights` before FSDP2 sharding): every parameter is moved to the
    meta device (its values are dropped), buffers are allocated on / moved to `buffer_device`,
    and `init(module)` runs recorded; each parameter's last init write joins the module's
    record, which a later `materialize_` - after sharding, say - writes. Buffers get their
    values for real; a buffer allocated here that `init` did not write goes back to meta, so
    that materialize_ names it."""
    fresh: Set[int] = set()
    moved: Dict[int, nn.Parameter] = {}  # a parameter shared by two modules stays shared
    with torch.no_grad():
        for m in module.modules():
            for name, p in m._parameters.items():
                if p is not None and p.device.type != "meta" and not is_dtensor(p):
                    if id(p) not in moved:
                        moved[id(p)] = _on_meta(p)
                    m._parameters[name] = moved[id(p)]
            for name, b in m._buffers.items():
                if b is None or is_dtensor(b):
                    continue
                if b.device.type == "meta":
                    m._buffers[name] = torch.empty_like(b, device=buffer_device)
                    fresh.add(storage_of(m._buffers[name]))
                elif b.device != buffer_device:
                    m._buffers[name] = b.to(buffer_device)
    tracker = _WriteTracker()
    with tracker, recording(module, seed=0) as session, _LiveTensors(session.names):
        init(module)
    for m in module.modules():
        for name, b in m._buffers.items():
            if b is not None and storage_of(b) in fresh and storage_of(b) not in tracker.written:
                m._buffers[name] = torch.empty_like(b, device="meta")
    new = _collect(module, session, tracker.written, "the init pass")
    old = deferred_record(module)
    if old is not None:  # later writes replace earlier ones, as they would have for real
        new = DeferredRecord({k: v for k, v in old.specs.items() if k not in new.unrecorded}
                             | new.specs,
                             {k: v for k, v in old.unrecorded.items() if k not in new.specs}
                             | new.unrecorded,
                             {k: v for k, v in old.values.items() if k not in new.unrecorded},
                             {k: v for k, v in old.copies.items()
                              if k not in new.specs and k not in new.unrecorded} | new.copies)
    _attach(module, new)
    return new


def deferred_record(module: nn.Module) -> Optional[DeferredRecord]:
    """The record `deferred_init` attached to `module`, or None."""
    return module.__dict__.get(_RECORD_ATTR)


def _post_order(module: nn.Module) -> Iterator[nn.Module]:
    """Children before their parent, each module once: a parent's reset_parameters() gets the
    last word over what its children's wrote, as when a parent initializes its children."""
    seen: Set[int] = set()

    def visit(m: nn.Module) -> Iterator[nn.Module]:
        if id(m) in seen:
            return
        seen.add(id(m))
        for child in m.children():
            yield from visit(child)
        yield m

    yield from visit(module)


def _snapshot(module: nn.Module) -> list:
    """Every parameter and buffer slot of every submodule with what it holds now (and the
    tensor a parameter wraps, which to_empty may replace in place through `.data`)."""
    saved = []
    for m in module.modules():
        for name, p in m._parameters.items():
            saved.append((m._parameters, name, p, None if p is None else p.data))
        for name, b in m._buffers.items():
            saved.append((m._buffers, name, b, None))
    return saved


def _restore(saved: list) -> List[str]:
    """Put the snapshot back; the names that could not be restored (best effort: the caller is
    already raising)."""
    failed = []
    with torch.no_grad():
        for table, name, obj, data in saved:
            table[name] = obj
            if data is None:
                continue
            try:
                if obj.device == data.device and not is_dtensor(obj):
                    obj.data = data
                else:  # to_empty swapped the contents (swap_module_params_on_conversion)
                    torch.utils.swap_tensors(obj, type(obj)(data, requires_grad=obj.requires_grad))
            except Exception:  # noqa: BLE001 - reported on the error being raised
                failed.append(name)
    return failed


def _allocate_and_write(module: nn.Module, device: torch.device, seed: int,
                        record: Optional[DeferredRecord], init: Optional[Callable[[nn.Module], object]],
                        kept: Dict[str, torch.Tensor], around: Optional[Callable],
                        progress: Callable[[str], None], caller: str) -> None:
    # to_empty gives a meta tensor held by two modules (tied weights) two new tensors: each
    # tensor is allocated once, through its first slot, and the others share it again.
    # (DTensors are left to their owner: FSDP2 handles to_empty of its parameters itself.)
    first: Dict[int, Tuple[dict, str]] = {}
    others: List[Tuple[dict, str, dict, str]] = []
    for m in module.modules():
        for table in (m._parameters, m._buffers):
            for leaf, t in table.items():
                if t is None or is_dtensor(t):
                    continue
                if id(t) in first:
                    others.append((table, leaf) + first[id(t)])
                else:
                    first[id(t)] = (table, leaf)
    for table, leaf, _, _ in others:
        table[leaf] = None  # the key keeps its place (the order of state_dict)
    module.to_empty(device=device)
    with torch.no_grad():
        for name, t in kept.items():
            owner, _, leaf = name.rpartition(".")
            if leaf in module.get_submodule(owner)._buffers:
                module.get_submodule(owner)._buffers[leaf] = t.to(device)
            else:  # a parameter keeps its object (references to it): its new memory takes it
                module.get_parameter(name).copy_(t)
    for table, leaf, source_table, source_leaf in others:
        table[leaf] = source_table[source_leaf]
    fresh = {storage_of(t) for name, t, _ in _named_tensors(module) if name not in kept}
    progress("allocated")

    tracker = _WriteTracker()
    with tracker, (around(module) if around is not None else contextlib.nullcontext()):
        with recording(module, seed) as session:
            if record is not None:
                for name, t, is_param in _named_tensors(module):
                    spec = record.specs.get(name)
                    if spec is not None:
                        session.queue(t, spec, stream_name=record.copies.get(name))
            if init is not None:
                init(module)
            else:  # modules that did not come from deferred_init: their reset_parameters()
                for m in _post_order(module):
                    reset = getattr(m, "reset_parameters", None)
                    if callable(reset) and deferred_record(m) is None:
                        reset()

    missing = [name for name, t, _ in _named_tensors(module)
               if storage_of(t) in fresh and storage_of(t) not in tracker.written
               and name not in session.written]
    if missing:
        reasons = []
        for name in missing[:8]:
            why = record.unrecorded.get(name) if record is not None else None
            reasons.append(f"{name} ({why})" if why else name)
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        how = ("no recorded init or init() wrote them" if record is not None else
               "no reset_parameters() or init() wrote them (torch's nn.MultiheadAttention and "
               "nn.Transformer initialize in their constructors: build them with "
               "fusedinit.deferred_init, or pass init=)" if init is None else
               "init() did not write them")
        raise RuntimeError(f"{caller}: left uninitialized: {', '.join(reasons)}{more}; {how}")
    progress("written")


def allocate_and_write_(module: M, device: torch.device, seed: int, *,
                        init: Optional[Callable[[nn.Module], object]] = None,
                        keep_parameters: bool = False,
                        around: Optional[Callable[[nn.Module], ContextManager]] = None,
                        progress: Optional[Callable[[str], None]] = None,
                        caller: str = "fusedinit.materialize_") -> M:
    """The one allocation and write path of `materialize_` and `from_config` (arguments
    already checked): allocate `module` on `device` (`to_empty`), keep the real values of
    buffers (and of parameters with `keep_parameters`: transformers 4.x builds those its
    layers make with torch.ones / zeros for real), then - in one recording, one op call per
    device - write the record `deferred_init` / `record_on_meta_` left, then `init(module)`
    (else, without a record, each submodule's `reset_parameters()`). `around(module)` is a
    context entered after the allocation and left once everything is written (from_config
    unties tied weights in it). `progress` hears "allocated" and "written". Raises, naming
    them, if a parameter or buffer is left uninitialized; when it raises, the module's
    parameters and buffers are left as they were."""
    record = _gathered_record(module)
    # Real values to keep (a parameter's by a detached alias: to_empty replaces its memory).
    kept = {name: t.detach() if is_param else t for name, t, is_param in _named_tensors(module)
            if (keep_parameters or not is_param) and t.device.type != "meta"
            and not is_dtensor(t)}
    if record is not None:  # real values the constructor registered (no draw in them)
        kept.update({name: t for name, t in record.values.items() if name not in kept})
    saved = _snapshot(module)
    try:
        _allocate_and_write(module, device, seed, record, init, kept, around,
                            progress or (lambda stage: None), caller)
    except BaseException as exc:
        # Nothing half-done is handed back: every parameter and buffer is put back as it was
        # (to_empty allocated new memory, so the old tensors are intact) and the call can be
        # made again.
        failed = _restore(saved)
        if failed:
            exc.add_note(f"{caller} could not put back: {', '.join(failed)}")
        raise
    return module


def materialize_(module: M, *, device, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None,
                 init: Optional[Callable[[nn.Module], object]] = None) -> M:
    """Allocate `module` on `device` and initialize it in one fused pass (one op call per
    device, each parameter on the stream of its fully qualified name, one `seed` or 64 bits
    drawn from `generator` / torch's default generator): the constructor init `deferred_init`
    recorded, then `init(module)` if given (e.g. `lambda m: m.init_weights()`), else - for a
    module not built by `deferred_init` - every submodule's public `reset_parameters()`.
    Parameters that are already DTensors (FSDP2, tensor parallelism) get their local shards
    written, equal to the unsharded module's. Buffers that hold real values are kept (moved to
    `device`). Raises, naming them, if any parameter or buffer is left uninitialized; when it
    raises, the module's parameters and buffers are left as they were."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device must name a torch device, got {device!r}") from exc
    if device.type == "meta":
        raise ValueError("device must be a real device, not 'meta'")
    if init is not None and not callable(init):
        raise TypeError(f"init must be a callable taking the module, got {type(init).__name__}")
    return allocate_and_write_(module, device, resolve_seed(seed, generator), init=init)


__all__ = ["deferred_init", "materialize_", "deferred_record", "DeferredRecord"]
