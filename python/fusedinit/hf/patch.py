"""`patch_transformers`: every transformers model initializes through fusedinit.

Three methods of `PreTrainedModel` are wrapped, once, under a lock (the one process-wide change,
which is what the user asks for; unpatching restores them):

- `initialize_weights` (the one entry of an init pass in transformers 4.57 and 5.x): the
  outermost call opens a recording (engine.py) on the model, which queues the writes of the
  model's own `_init_weights` and writes them as one op call per device when the pass ends.
  Model code and classes are untouched (never subclassed): each family keeps its own rules,
  special stds, tied weights and expert layouts; only where the random numbers come from
  changes. `_init_weights` calls outside a pass (e.g. from `resize_token_embeddings`) run as
  before, immediately.
- `__init__` and `post_init` bracket a model's construction: a model whose pass starts while
  another model is being built (LlamaModel inside LlamaForCausalLM) defers it to the enclosing
  model, whose pass covers it once every parameter name is final (streams are hashes of names
  in the finished model). A deferred model that does not end up inside the enclosing one gets
  its own pass right after the enclosing pass. Which models are being built is a ContextVar
  (per thread / task); before a pass is deferred, the enclosing model's constructor is checked
  to be still running (one whose constructor raised is forgotten, not waited for).
"""
from __future__ import annotations

import contextvars
import functools
import sys
import threading
import weakref
from contextlib import contextmanager
from typing import Optional

from ..ops.seed import check_u64, resolve_seed
from ..models.engine import current_session, recording

_lock = threading.Lock()
# originals: the wrapped methods' originals while installed; seed: patch_transformers' seed;
# explicit: patch_transformers is in force; blocks: open patched_transformers blocks.
_state = {"originals": None, "seed": None, "explicit": False, "blocks": 0}
_METHODS = ("__init__", "post_init", "initialize_weights")

# Models whose PreTrainedModel.__init__ has run and whose post_init has not: being built.
_building: contextvars.ContextVar[tuple] = contextvars.ContextVar("fusedinit_building",
                                                                  default=())
# (seed,) of the innermost patched_transformers block in this context.
_block_seed: contextvars.ContextVar[Optional[tuple]] = contextvars.ContextVar(
    "fusedinit_patch_seed", default=None)
# enclosing model -> weak references to models whose pass was deferred to it.
_deferred: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _pretrained_model():
    from transformers import PreTrainedModel
    return PreTrainedModel


def _constructing(model) -> bool:
    """Whether some `__init__` of `model` is still running in this thread. A model whose
    constructor raised after PreTrainedModel.__init__ never reaches post_init and stays marked
    as being built; the frames tell the two apart. Looked at only when a pass is about to be
    deferred (a model built while another one is marked), so the common path walks no stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "__init__" and frame.f_locals.get("self") is model:
            return True
        frame = frame.f_back
    return False


def _enclosing(model):
    """The innermost other model being built in this context, or None. Models marked as being
    built whose constructor has ended by an exception are unmarked on the way."""
    for ref in reversed(_building.get()):
        other = ref()
        if other is None or other is model:
            continue
        if _constructing(other):
            return other
        _building.set(tuple(r for r in _building.get() if r() is not None and r() is not other))
    return None


def _wrap_init(original):
    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _building.set(tuple(r for r in _building.get() if r() is not None)
                      + (weakref.ref(self),))

    return __init__


def _wrap_post_init(original):
    @functools.wraps(original)
    def post_init(self, *args, **kwargs):
        _building.set(tuple(r for r in _building.get() if r() is not None and r() is not self))
        return original(self, *args, **kwargs)

    return post_init


def _run_deferred(root) -> None:
    """Deferred passes of models built inside `root`'s construction: covered by root's pass if
    they are its submodules, otherwise each gets its own pass now."""
    covered = {id(m) for m in root.modules()}
    stack = [root]
    while stack:
        with _lock:
            inner = _deferred.pop(stack.pop(), [])
        for ref in inner:
            model = ref()
            if model is None:
                continue
            if id(model) in covered:
                stack.append(model)  # models deferred to it may still be outside root
            else:
                model.initialize_weights()


def _wrap_initialize_weights(original):
    @functools.wraps(original)
    def initialize_weights(self, *args, **kwargs):
        if current_session() is not None:  # inside an outer pass: it records this one too
            return original(self, *args, **kwargs)
        enclosing = _enclosing(self)
        if enclosing is not None:
            with _lock:
                _deferred.setdefault(enclosing, []).append(weakref.ref(self))
            return None
        block = _block_seed.get()
        seed = block[0] if block is not None else _state["seed"]
        with recording(self, resolve_seed(seed, None)):
            result = original(self, *args, **kwargs)
        _run_deferred(self)
        return result

    return initialize_weights


_WRAPPERS = {"__init__": _wrap_init, "post_init": _wrap_post_init,
             "initialize_weights": _wrap_initialize_weights}


def _install() -> None:
    """Wrap the methods (caller holds _lock). Reassigning class attributes, not a torch hook,
    by necessity: torch's module hooks see forward calls and parameter / buffer / submodule
    registration, none of them the start of an init pass (`initialize_weights`) or the end of
    a construction (`post_init`), which are transformers' own methods. This is the one
    process-wide change, scoped (reference-counted, restored by _uninstall_if_unused)."""
    if _state["originals"] is None:
        cls = _pretrained_model()
        _state["originals"] = {name: cls.__dict__[name] for name in _METHODS}
        for name in _METHODS:
            wrapped = _WRAPPERS[name](_state["originals"][name])
            wrapped.__fusedinit_original__ = _state["originals"][name]
            setattr(cls, name, wrapped)


def _uninstall_if_unused() -> None:
    """Restore the methods once no patch_transformers and no patched_transformers block wants
    them (caller holds _lock)."""
    if _state["originals"] is not None and not _state["explicit"] and not _state["blocks"]:
        cls = _pretrained_model()
        for name, original in _state["originals"].items():
            setattr(cls, name, original)
        _state["originals"] = None


def patch_transformers(seed: Optional[int] = None) -> None:
    """Make every transformers model initialize through fusedinit (idempotent; a second call
    only changes the seed). seed=None draws a fresh seed from torch's default generator for
    each init pass, so torch.manual_seed keeps runs reproducible."""
    if seed is not None:
        seed = check_u64("seed", seed)
    with _lock:
        _state["seed"], _state["explicit"] = seed, True
        _install()


def unpatch_transformers() -> None:
    """Undo patch_transformers (a no-op when not patched). Methods stay wrapped while a
    `patched_transformers` block is open in some thread, until the last one exits."""
    with _lock:
        _state["seed"], _state["explicit"] = None, False
        _uninstall_if_unused()


def is_patched() -> bool:
    return _state["originals"] is not None


@contextmanager
def patched_transformers(seed: Optional[int] = None):
    """`with fusedinit.patched_transformers(seed=...):` - patched inside, restored after the
    last open block exits (an outer patch_transformers stays, with its seed). The seed applies
    to passes run in this context (thread / task) only."""
    if seed is not None:
        seed = check_u64("seed", seed)
    with _lock:
        _state["blocks"] += 1
        _install()
    token = _block_seed.set((seed,))
    try:
        yield
    finally:
        _block_seed.reset(token)
        with _lock:
            _state["blocks"] -= 1
            _uninstall_if_unused()
