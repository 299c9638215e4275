"""`patch_transformers`: every transformers model initializes through fusedinit.

`PreTrainedModel.initialize_weights` (the one entry of an init pass in transformers 4.57 and
5.x) is wrapped: the outermost call opens a session on the model, records the writes of the
model's own `_init_weights` (recorder.py) and flushes them as one op call per device when the
pass ends. Model code and classes are untouched (never subclassed): each family keeps its own
rules, special stds, tied weights and expert layouts; only where the random numbers come from
changes. `_init_weights` calls outside a pass (e.g. from `resize_token_embeddings`) run as
before, immediately."""
from __future__ import annotations

import functools
import sys
import threading
from contextlib import contextmanager
from typing import Optional

from .._seed import check_u64, resolve_seed
from ..session import InitSession, active_session, current_session
from .recorder import WriteRecorder, recording_trunc_normal

_lock = threading.Lock()
_state = {"original": None, "seed": None}


def _pretrained_model():
    from transformers import PreTrainedModel
    return PreTrainedModel


@contextmanager
def recording(model, seed: Optional[int], record_only: bool = False):
    """Record and batch every init write made inside, for `model`'s parameters and buffers;
    flush once at the end (not on error: the error propagates). record_only: keep the writes
    queued (InitSession) instead of writing them."""
    session = InitSession(model, resolve_seed(seed, None), record_only=record_only)
    with active_session(session), WriteRecorder(session), recording_trunc_normal(session):
        yield session
    session.flush()


def models_on_stack(function: str):
    """(model, frame) for each frame of `function` (e.g. "initialize_weights") on this thread's
    stack whose `self` is a PreTrainedModel, innermost first."""
    cls = _pretrained_model()
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == function:
            owner = frame.f_locals.get("self")
            if isinstance(owner, cls):
                yield owner, frame
        frame = frame.f_back


def _built_inside_another_model(model) -> bool:
    """True while `model` is constructed as a submodel inside another PreTrainedModel's
    __init__ (LlamaModel inside LlamaForCausalLM): its parameters do not have their final
    names yet."""
    return any(owner is not model for owner, _ in models_on_stack("__init__"))


def _wrap(original):
    @functools.wraps(original)
    def initialize_weights(self, *args, **kwargs):
        if current_session() is not None:  # inside an outer pass: it records this one too
            return original(self, *args, **kwargs)
        if _built_inside_another_model(self):
            # The enclosing model's pass initializes these modules (with the submodel's own
            # _init_weights, as transformers dispatches it) once every name is final, so a
            # parameter's stream is the hash of its name in the finished model.
            return None
        with recording(self, _state["seed"]):
            result = original(self, *args, **kwargs)
        return result

    initialize_weights.__fusedinit_original__ = original
    return initialize_weights


def patch_transformers(seed: Optional[int] = None) -> None:
    """Make every transformers model initialize through fusedinit (idempotent; a second call
    only changes the seed). seed=None draws a fresh seed from torch's default generator for
    each init pass, so torch.manual_seed keeps runs reproducible."""
    if seed is not None:
        seed = check_u64("seed", seed)
    cls = _pretrained_model()
    with _lock:
        _state["seed"] = seed
        if _state["original"] is None:
            _state["original"] = cls.__dict__["initialize_weights"]
            cls.initialize_weights = _wrap(_state["original"])


def unpatch_transformers() -> None:
    """Undo patch_transformers (a no-op when not patched)."""
    with _lock:
        if _state["original"] is not None:
            _pretrained_model().initialize_weights = _state["original"]
            _state["original"] = None
            _state["seed"] = None


def is_patched() -> bool:
    return _state["original"] is not None


@contextmanager
def patched_transformers(seed: Optional[int] = None):
    """`with fusedinit.patched_transformers(seed=...):` - patched inside, restored after (an
    outer patch stays, with its seed)."""
    was_patched, old_seed = is_patched(), _state["seed"]
    patch_transformers(seed)
    try:
        yield
    finally:
        if was_patched:
            _state["seed"] = old_seed
        else:
            unpatch_transformers()
