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

from ..models.deferred import allocate_and_write_, checked_target, gathered_record
from ..models.places import GlobalBlock
from ..ops.seed import resolve_seed
from .places import global_places
from .shape_rules import shape_dependent_parameters

M = TypeVar("M", bound=nn.Module)


def _ranks() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


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
    depend on (seed, key, global index) only, not on the parallel layout. In a job of several
    ranks `seed` must be given (ranks seed torch differently). Raises, naming them, for
    parameters that description leaves out, parameters whose recorded rule depends on a
    layout-dependent shape (a fan-based init method under Megatron's GPU initialization or
    in GroupedMLP) and parameters left uninitialized; when it raises, the model is left as it
    was."""
    device = checked_target(model, device, init, "model")
    if seed is None and generator is None and _ranks() > 1:
        raise ValueError("seed must be given in a job of several ranks: drawn from torch's "
                         "generator it would differ where ranks seed torch differently "
                         "(Megatron seeds each pipeline stage with its own seed), and so would "
                         "the model")
    if getattr(model, "share_embeddings_and_output_weights", False) \
            and getattr(model, "post_process", False) and not getattr(model, "pre_process", True):
        raise ValueError("output_layer.weight is tied to the embedding of the first pipeline "
                         "stage, which Megatron copies into it with an all-reduce while it "
                         "builds the model: fusedinit cannot record that copy. Build with "
                         "share_embeddings_and_output_weights=False, or with one pipeline stage")
    record = gathered_record(model)
    if record is None and init is None:
        raise ValueError("model was not built by fusedinit.deferred_init (nothing of its "
                         "constructor's init is recorded): build it with "
                         "fusedinit.deferred_init(GPTModel, config, ...), or pass init=")
    places = global_places(model)
    shaped = shape_dependent_parameters(model, record, places)
    if shaped:
        raise ValueError(
            f"the recorded init of {', '.join(shaped[:6])}{' and more' if len(shaped) > 6 else ''} "
            "depends on the shape Megatron gave the init method, and that shape depends on the "
            "parallel layout (Megatron's GPU initialization gives it this rank's shard, "
            "GroupedMLP this rank's experts): another layout would give another model. Build "
            "with use_cpu_initialization=True (the full master weight, recorded without "
            "allocating it) and sequential experts, or use an init method that does not depend "
            "on the shape (init_method_normal)")
    return allocate_and_write_(model, device, resolve_seed(seed, generator), init=init,
                               places=places, caller="fusedinit.megatron.materialize_",
                               uninitialized_hint=_hint(model))


__all__ = ["materialize_", "global_places", "GlobalBlock"]
