"""`fused_init_weights`: Hugging Face's base `_init_weights` rules, written by fusedinit.

Usable as `MyPreTrainedModel._init_weights = fusedinit.hf.fused_init_weights`. Linear / Conv
weights N(0, std^2) and biases zero, Embedding N(0, std^2) with its padding row zero, norm
weights one and biases zero; other module types (LSTM, MultiheadAttention, rotary buffers) go
to transformers' own base method. std comes from the config as transformers takes it.

Batching: inside a recording pass (patch_transformers, from_config, fusedinit.fuse) the writes
join its queue and go out as one op call per device when the pass ends. Outside one, each call
writes at once, with one seed per init pass of the model, drawn at the pass's first call (a
pass visits each module once), so values do not depend on the order modules are visited in."""
from __future__ import annotations

import threading
import weakref

from torch import nn

from ..ops.seed import resolve_seed
from ..models.engine import current_session
from ..models.modules import base_rules
from ..models.queue import InitSession
from .versions import transformers_major

# model -> (seed, ids of the modules visited) of its unbatched pass in progress.
_passes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def config_std(config) -> float:
    """The std transformers' base `_init_weights` uses for this config - as the installed
    transformers reads it: 5.x also takes `init_std` / `initializer_factor` and treats an
    `initializer_range` of 0 as unset; 4.x takes `initializer_range` as it is."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if transformers_major() < 5:
        if hasattr(config, "initializer_range"):
            return config.initializer_range
        return getattr(text, "initializer_range", 0.02)
    if hasattr(config, "initializer_range"):
        return config.initializer_range or 0.02
    if hasattr(config, "init_std"):
        return config.init_std
    if hasattr(config, "initializer_factor"):
        return config.initializer_factor
    return getattr(text, "initializer_range", 0.02)


def fused_init_weights(self, module: nn.Module) -> None:
    """Drop-in for `PreTrainedModel._init_weights` (see the module docstring)."""
    from transformers import PreTrainedModel

    session = current_session()
    seed = None if session is not None else _pass_seed(self, module)
    rules = base_rules(module, config_std(self.config))
    if rules is None:
        PreTrainedModel._init_weights(self, module)
        return
    # Tensors a user loaded (or transformers marked, e.g. tied copies) are never written.
    rules = [(t, spec) for t, spec in rules if not getattr(t, "_is_hf_initialized", False)]
    if session is not None:
        _queue(self, module, session, rules)
        return
    # No recording: write now, with the pass's seed.
    session = InitSession(self, seed)
    rules = [(t, spec) for t, spec in rules if t.device.type != "meta"]
    if _queue(self, module, session, rules):
        session.flush()


def _pass_seed(model, module: nn.Module) -> int:
    """The seed of `model`'s current unbatched pass, drawn at its first call. A pass visits
    each module once: a module seen again starts a new pass (with a new seed), and the call
    for the model itself, which transformers makes last when it makes it, ends the pass."""
    with _lock:
        seed, seen = _passes.get(model, (None, set()))
        if seed is None or id(module) in seen:
            seed, seen = resolve_seed(None, None), set()
        seen.add(id(module))
        if module is model:
            _passes.pop(model, None)
        else:
            _passes[model] = (seed, seen)
    return seed


def _queue(self, module: nn.Module, session: InitSession, rules: list) -> bool:
    """Queue the rules; False (and transformers' own code handles the module) if some floating
    tensor is not one of the model being initialized (e.g. a module resize_token_embeddings is
    about to attach)."""
    from transformers import PreTrainedModel

    if any(t.is_floating_point() and session.name_of(t) is None for t, _ in rules):
        PreTrainedModel._init_weights(self, module)
        return False
    for t, spec in rules:
        session.queue(t, spec)
    return True
