"""`deferred_init` and `materialize_`: build any nn.Module without allocating its parameters,
then allocate them on the target device and initialize everything in one fused pass.

`deferred_init(fn, ...)` runs the constructor with every parameter moved to the meta device as
it is registered, while the engine (engine.py) records the init writes the constructor makes -
`reset_parameters()` in torch's modules, `_reset_parameters()` in nn.MultiheadAttention and
nn.Transformer, timm's `init_weights`, anything built from normal_ / uniform_ / fill_ / zero_
and the trunc_normal_ chains the engine folds, scalar arithmetic on recorded values, and the
values the constructor computes before it registers them (construction.py,
constructor_values.py). Buffers are computed for real (they are small and often not made by
init ops: rotary tables, BatchNorm statistics, masks). What a constructor does that cannot be
recorded on meta (a non-affine op on drawn values: `abs_` after `normal_`, `orthogonal_`'s QR)
is remembered per parameter, so materializing it is an error naming it unless later init code
overwrites it.

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
import dataclasses
from typing import (Callable, ContextManager, Dict, Iterator, List, Optional, Set, Tuple,
                    TypeVar)

import torch
from torch import nn
from torch.nn.modules.module import (register_module_buffer_registration_hook,
                                     register_module_parameter_registration_hook)

from ..ops.seed import resolve_seed
from ..ops.sharding import is_dtensor
from .construction import (Construction, ConstructionTracker, LiveTensors, WriteTracker,
                           building, on_meta, whole_meta)
from .engine import recording
from .places import Places
from .queue import InitSession, storage_of, tensor_key

aten = torch.ops.aten
M = TypeVar("M", bound=nn.Module)

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
    tracker = ConstructionTracker()
    with tracker, recording(holder, seed=0) as session:
        construction = Construction(session.names, tracker)
        tracker.session, tracker.construction = session, construction

        def name_new(t: torch.Tensor) -> None:
            # Tensors that never went through registration (copy.deepcopy of a registered
            # layer, as nn.TransformerEncoder clones its layers) are named at their first write;
            # only meta tensors that are a whole storage - a view's write must stay a barrier.
            if whole_meta(t):
                construction.name(t)

        def queued(t: torch.Tensor) -> None:
            # A whole-tensor write queued after an unrecordable op replaces its result, and a
            # copy's values with its own.
            tracker.written.discard(storage_of(t))
            construction.copies.pop(construction.names.get(tensor_key(t)), None)

        token = building.set(construction)
        hooks = [register_module_parameter_registration_hook(construction.on_parameter),
                 register_module_buffer_registration_hook(construction.on_buffer)]
        try:
            with session.watching_queue(name_new, queued), \
                    LiveTensors(session.names, tracker):
                module = fn(*args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()
            building.reset(token)
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


def gathered_record(module: nn.Module) -> Optional[DeferredRecord]:
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
             who: str, construction: Optional[Construction] = None) -> DeferredRecord:
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
                        moved[id(p)] = on_meta(p)
                    m._parameters[name] = moved[id(p)]
            for name, b in m._buffers.items():
                if b is None or is_dtensor(b):
                    continue
                if b.device.type == "meta":
                    m._buffers[name] = torch.empty_like(b, device=buffer_device)
                    fresh.add(storage_of(m._buffers[name]))
                elif b.device != buffer_device:
                    m._buffers[name] = b.to(buffer_device)
    tracker = WriteTracker()
    with tracker, recording(module, seed=0) as session, LiveTensors(session.names):
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
            saved.append((m._parameters, name, p, None if p is None else p.data,
                          None if p is None else dict(vars(p))))
        for name, b in m._buffers.items():
            saved.append((m._buffers, name, b, None, None))
    return saved


def _restore(saved: list) -> List[str]:
    """Put the snapshot back; the names that could not be restored (best effort: the caller is
    already raising)."""
    failed = []
    with torch.no_grad():
        for table, name, obj, data, attributes in saved:
            table[name] = obj
            if data is None:
                continue
            try:
                if obj.device == data.device and not is_dtensor(obj):
                    obj.data = data
                else:  # to_empty swapped the contents (swap_module_params_on_conversion)
                    torch.utils.swap_tensors(obj, type(obj)(data, requires_grad=obj.requires_grad))
                    obj.__dict__.update(attributes)  # (swap_tensors swaps __dict__ too)
            except Exception:  # noqa: BLE001 - reported on the error being raised
                failed.append(name)
    return failed


def _allocate_and_write(module: nn.Module, device: torch.device, seed: int,
                        record: Optional[DeferredRecord], init: Optional[Callable[[nn.Module], object]],
                        kept: Dict[str, torch.Tensor], around: Optional[Callable],
                        progress: Callable[[str], None], caller: str,
                        places: Optional[Places], uninitialized_hint: str) -> None:
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
    # to_empty makes new Parameter objects for meta ones: the attributes libraries set on a
    # parameter (Megatron's tensor_model_parallel / partition_dim / allreduce / shared, which
    # its DDP and optimizer read) go over to the new object.
    attributes = [(table, leaf, dict(vars(t))) for table, leaf in first.values()
                  if isinstance(t := table[leaf], nn.Parameter) and vars(t)]
    module.to_empty(device=device)
    for table, leaf, saved in attributes:
        new = table[leaf]
        for k, v in saved.items():
            if k not in vars(new):
                setattr(new, k, v)
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

    tracker = WriteTracker()
    with tracker, (around(module) if around is not None else contextlib.nullcontext()):
        with recording(module, seed, places=places) as session:
            if record is not None:
                for name, t, is_param in _named_tensors(module):
                    spec = record.specs.get(name)
                    if spec is not None:
                        if places and name in places and name in record.copies:
                            raise NotImplementedError(
                                f"{caller}: {name} is a copy of {record.copies[name]} made by "
                                "its constructor, and has a global place: writing a copy at "
                                "its own global place is not supported")
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
        raise RuntimeError(f"{caller}: left uninitialized: {', '.join(reasons)}{more}; {how}"
                           + uninitialized_hint)
    progress("written")


def allocate_and_write_(module: M, device: torch.device, seed: int, *,
                        init: Optional[Callable[[nn.Module], object]] = None,
                        keep_parameters: bool = False,
                        around: Optional[Callable[[nn.Module], ContextManager]] = None,
                        progress: Optional[Callable[[str], None]] = None,
                        caller: str = "fusedinit.materialize_",
                        places: Optional[Places] = None,
                        uninitialized_hint: str = "") -> M:
    """The one allocation and write path of `materialize_` and `from_config` (arguments
    already checked): allocate `module` on `device` (`to_empty`), keep the real values of
    buffers (and of parameters with `keep_parameters`: transformers 4.x builds those its
    layers make with torch.ones / zeros for real), then - in one recording, one op call per
    device - write the record `deferred_init` / `record_on_meta_` left, then `init(module)`
    (else, without a record, each submodule's `reset_parameters()`); the parameters named in
    `places` are written as the global blocks given there. `around(module)` is a
    context entered after the allocation and left once everything is written (from_config
    unties tied weights in it). `progress` hears "allocated" and "written". Raises, naming
    them, if a parameter or buffer is left uninitialized; when it raises, the module's
    parameters and buffers are left as they were."""
    record = gathered_record(module)
    # Real values to keep (a parameter's by a detached alias: to_empty replaces its memory).
    kept = {name: t.detach() if is_param else t for name, t, is_param in _named_tensors(module)
            if (keep_parameters or not is_param) and t.device.type != "meta"
            and not is_dtensor(t)}
    if record is not None:  # real values the constructor registered (no draw in them)
        kept.update({name: t for name, t in record.values.items() if name not in kept})
    saved = _snapshot(module)
    try:
        _allocate_and_write(module, device, seed, record, init, kept, around,
                            progress or (lambda stage: None), caller, places,
                            uninitialized_hint)
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
    device = checked_target(module, device, init)
    return allocate_and_write_(module, device, resolve_seed(seed, generator), init=init)


def checked_target(module, device, init, argument: str = "module") -> torch.device:
    """materialize_'s argument checks (the module, its target device, `init`): the device."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"{argument} must be an nn.Module, got {type(module).__name__}")
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device must name a torch device, got {device!r}") from exc
    if device.type == "meta":
        raise ValueError("device must be a real device, not 'meta'")
    if init is not None and not callable(init):
        raise TypeError(f"init must be a callable taking the {argument}, got "
                        f"{type(init).__name__}")
    return device


__all__ = ["deferred_init", "materialize_", "deferred_record", "DeferredRecord"]
