"""Megatron-Core: every rank writes its own tensor- / pipeline- / expert-parallel shards with
Megatron's own init rules, equal to the unsharded model for any parallel layout.

    model = fusedinit.deferred_init(GPTModel, config, layer_spec, vocab_size=..., ...)
    fusedinit.megatron.materialize_(model, device="cuda", seed=1234)

`deferred_init` runs Megatron's constructor with every parameter on the meta device and records
what `config.init_method`, `config.output_layer_init_method` and the rest write (with
`use_cpu_initialization=True` the full master weight Megatron draws and slices is recorded as a
rule, never allocated). `materialize_` allocates this rank's parameters on `device` and writes
them in one op call per device, each local parameter as the blocks of the global tensors
`model.sharded_state_dict()` says it holds: on the stream of the global key, at the global
indices - so the gathered model is the same for every TP / PP / EP layout."""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

import torch
from torch import nn

from ..models.deferred import allocate_and_write_
from ..models.places import GlobalBlock
from ..ops.seed import resolve_seed
from .places import global_places

M = TypeVar("M", bound=nn.Module)


def _hint(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if getattr(config, "perform_initialization", True) is False:
        return ("; config.perform_initialization is False, so Megatron's constructor wrote no "
                "weights: build with perform_initialization=True (deferred_init records the "
                "rules without drawing or allocating anything), or pass init=")
    return ""


def materialize_(model: M, *, device, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None,
                 init: Optional[Callable[[nn.Module], object]] = None) -> M:
    """Allocate a Megatron-Core `model` (built by `fusedinit.deferred_init`, after
    `parallel_state.initialize_model_parallel`) on `device` and initialize this rank's
    parameters in one fused pass: what its constructor's init wrote (Megatron's rules), then
    `init(model)` if given. Each parameter is written as the blocks of global tensors that
    `model.sharded_state_dict()` gives it, on the stream of the block's global key: the values
    depend on (seed, key, global index) only, not on the parallel layout. Raises, naming them,
    for parameters that description leaves out and parameters left uninitialized; when it
    raises, the model is left as it was."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device must name a torch device, got {device!r}") from exc
    if device.type == "meta":
        raise ValueError("device must be a real device, not 'meta'")
    if init is not None and not callable(init):
        raise TypeError(f"init must be a callable taking the model, got {type(init).__name__}")
    places = global_places(model)
    return allocate_and_write_(model, device, resolve_seed(seed, generator), init=init,
                               places=places, caller="fusedinit.megatron.materialize_",
                               uninitialized_hint=_hint(model))


__all__ = ["materialize_", "global_places", "GlobalBlock"]
