"""`fused_init_weights`: Hugging Face's base `_init_weights` rules, written by fusedinit.

Usable as `MyPreTrainedModel._init_weights = fusedinit.hf.fused_init_weights`. Linear / Conv
weights N(0, std^2) and biases zero, Embedding N(0, std^2) with its padding row zero, norm
weights one and biases zero; other module types (LSTM, MultiheadAttention, rotary buffers) go
to transformers' own base method. std comes from the config as transformers takes it.

Batching: inside a recording pass (patch_transformers, from_config) the writes join its queue.
Otherwise, during an `initialize_weights` pass of a model whose `_init_weights` is exactly this
function, writes are queued and flushed when that `initialize_weights` returns: one op call
per device. When a subclass overrides `_init_weights` (it may
write after calling this one) each call writes immediately, so the override's writes land last."""
from __future__ import annotations

import sys
import threading
from typing import Optional

from torch import nn

from .._seed import resolve_seed
from ..modules import base_rules
from ..session import InitSession, current_session
from .patch import models_on_stack

_local = threading.local()


def config_std(config) -> float:
    """The std transformers' base `_init_weights` uses for this config."""
    if hasattr(config, "initializer_range"):
        return config.initializer_range or 0.02
    if hasattr(config, "init_std"):
        return config.init_std
    if hasattr(config, "initializer_factor"):
        return config.initializer_factor
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "initializer_range", 0.02)


def _pass_session(model) -> Optional[InitSession]:
    """The queue of the running pass when batching is safe (no override of _init_weights).
    It is flushed when the pass's `initialize_weights` frame returns: a profile hook (chained
    to any profiler already set) watches for that one return, whatever transformers skips."""
    if type(model)._init_weights is not fused_init_weights:
        return None
    # The innermost initialize_weights running on this thread: its model is the pass's root.
    root, frame = next(models_on_stack("initialize_weights"), (None, None))
    if root is None:
        return None
    state = getattr(_local, "pass_state", None)
    if state is not None and state[1] is frame:
        return state[0]
    session = InitSession(root, resolve_seed(None, None))
    _local.pass_state = (session, frame)
    previous = sys.getprofile()

    def end_of_pass(f, event, arg):
        if previous is not None:
            previous(f, event, arg)
        if f is frame and event == "return":
            sys.setprofile(previous)
            _local.pass_state = None
            session.flush()

    sys.setprofile(end_of_pass)
    return session


def fused_init_weights(self, module: nn.Module) -> None:
    """Drop-in for `PreTrainedModel._init_weights` (see the module docstring)."""
    from transformers import PreTrainedModel

    rules = base_rules(module, config_std(self.config))
    if rules is None:
        PreTrainedModel._init_weights(self, module)
        return
    # Tensors a user loaded (or transformers marked, e.g. tied copies) are never written.
    rules = [(t, spec) for t, spec in rules if not getattr(t, "_is_hf_initialized", False)]
    session = current_session()
    owned = None if session is not None else _pass_session(self)
    target = session or owned or InitSession(self, resolve_seed(None, None))
    real = [(t, spec) for t, spec in rules if t.device.type != "meta"]
    if any(t.is_floating_point() and target.name_of(t) is None for t, _ in real):
        # Not tensors of the model being initialized (e.g. a module resize_token_embeddings is
        # about to attach): transformers' own code handles the module.
        PreTrainedModel._init_weights(self, module)
        return
    for t, spec in real:
        target.queue(t, spec)
    if target is not session and owned is None:
        target.flush()
