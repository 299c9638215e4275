"""Init methods whose rule depends on the shape they are given (`xavier_*`, `kaiming_*`: the
fan-in / fan-out), and the parameters Megatron hands them a shape that depends on the parallel
layout: its GPU initialization runs `init_method` on each rank's shard, and GroupedMLP's CPU
initialization on a master weight of this rank's experts only. Written at their global places,
such parameters would get the values of a layout-dependent rule - a different model for another
layout - so they are named instead. The check: a parameter whose recorded rule is what a
shape-dependent method (one of the config's init methods, or torch's xavier / kaiming) gives
for the parameter's local shape, and what no init method gives for its global shape (the key's
shape without Megatron's stacked layer / expert axes: what Megatron's CPU initialization of a
dense layer gives the method, for any layout), is named. Rules from other code (a module's own
init) are not second-guessed."""
from __future__ import annotations

import functools
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..models.constructor_values import without_stream
from ..models.deferred import DeferredRecord, record_on_meta_
from ..models.places import GlobalBlock
from ..ops.specs import Constant

_PROBE_SHAPES = ((64, 48), (96, 160))


def _rule_for(method: Callable, shape: Tuple[int, ...], cache: Dict) -> Optional[object]:
    """The rule `method` writes into a float32 tensor of `shape` (recorded on meta), stream
    cleared; None if it writes none fusedinit records."""
    key = (id(method), shape)
    if key not in cache:
        holder = nn.Module()
        holder.w = nn.Parameter(torch.empty(shape, device="meta"))
        try:
            spec = record_on_meta_(holder, lambda m: method(m.w),
                                   buffer_device=torch.device("cpu")).specs.get("w")
        except Exception:  # noqa: BLE001 - a method that cannot run on a bare tensor
            spec = None
        cache[key] = None if spec is None else without_stream(spec)
    return cache[key]


def _config_methods(config) -> List[Tuple[str, Callable]]:
    return [(f"config.{name}", getattr(config, name)) for name in sorted(vars(config))
            if name.endswith("init_method") and callable(getattr(config, name))]


# torch's fan-based initializers with their defaults (and nn.Linear's kaiming_uniform_(a=sqrt(5))):
# a layer spec may hand one of them to a layer directly, not through the config.
_TORCH_FAN_METHODS = (
    ("torch.nn.init.xavier_uniform_", torch.nn.init.xavier_uniform_),
    ("torch.nn.init.xavier_normal_", torch.nn.init.xavier_normal_),
    ("torch.nn.init.kaiming_uniform_", torch.nn.init.kaiming_uniform_),
    ("torch.nn.init.kaiming_normal_", torch.nn.init.kaiming_normal_),
    ("torch.nn.init.kaiming_uniform_(a=sqrt(5))",
     functools.partial(torch.nn.init.kaiming_uniform_, a=math.sqrt(5))),
)


def shape_dependent_parameters(model: nn.Module, record: Optional[DeferredRecord],
                               places: Dict[str, Sequence[GlobalBlock]]) -> List[str]:
    """The parameters whose recorded rule is a shape-dependent method's rule for the
    parameter's local shape but not for its global shape (its key's shape without the stacked
    axes), and no init method's rule for the global shape ("name (method)"). That is a fan
    taken from a shard (GPU initialization) or from this rank's experts (GroupedMLP)."""
    if record is None:
        return []
    cache: Dict = {}
    config = getattr(model, "config", None)
    methods = (_config_methods(config) if config is not None else []) + list(_TORCH_FAN_METHODS)
    shaped = [(n, m) for n, m in methods  # (torch's fan methods always are)
              if _rule_for(m, _PROBE_SHAPES[0], cache) != _rule_for(m, _PROBE_SHAPES[1], cache)]
    params = dict(model.named_parameters(remove_duplicate=True))
    named = []
    for name, spec in record.specs.items():
        blocks, param = places.get(name), params.get(name)
        if not blocks or param is None or isinstance(spec, Constant):
            continue  # constants (norms, biases) have no shape in them
        rule, whole = without_stream(spec), blocks[0].own_shape()
        if any(_rule_for(m, whole, cache) == rule for _, m in methods):
            continue
        culprits = [(n, list(shape)) for shape in _seen_shapes(param) if shape != whole
                    for n, m in shaped if _rule_for(m, shape, cache) == rule]
        if culprits:
            methods_named = " / ".join(sorted({n for n, _ in culprits}))
            named.append(f"{name} ({methods_named} of the shape {culprits[0][1]}, not of "
                         f"{list(whole)})")
    return named


def _seen_shapes(param: torch.Tensor) -> List[Tuple[int, ...]]:
    """The shapes Megatron hands an init method for `param`: its shard (GPU initialization)
    and the master weight of its tensor-parallel group (CPU initialization: the shard with its
    partition dim times the group's size - for GroupedMLP's experts, this rank's experts)."""
    local = tuple(param.shape)
    shapes = [local]
    if getattr(param, "tensor_model_parallel", False):
        from megatron.core import parallel_state as ps
        expert = getattr(param, "allreduce", True) is False
        size = (ps.get_expert_tensor_parallel_world_size() if expert
                else ps.get_tensor_model_parallel_world_size())
        dim = getattr(param, "partition_dim", -1)
        if size > 1 and 0 <= dim < len(local):
            shapes.append(local[:dim] + (local[dim] * size,) + local[dim + 1:])
    return shapes
