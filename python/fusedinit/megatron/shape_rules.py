"""Init methods whose rule depends on the shape they are given (`xavier_*`, `kaiming_*`: the
fan-in / fan-out), and the parameters Megatron hands them a shape that depends on the parallel
layout: its GPU initialization runs `init_method` on each rank's shard, and GroupedMLP's CPU
initialization on a master weight of this rank's experts only. Written at their global places,
such parameters would get the values of a layout-dependent rule - a different model for another
layout - so they are named instead. The check: a parameter's recorded rule must be what the
config's init method gives for the parameter's global shape (the key's global shape without
Megatron's stacked layer / expert axes - what Megatron's CPU initialization of a dense layer
gives it, for any layout)."""
from __future__ import annotations

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
    return [(name, getattr(config, name)) for name in sorted(vars(config))
            if name.endswith("init_method") and callable(getattr(config, name))]


def shape_dependent_parameters(model: nn.Module, record: Optional[DeferredRecord],
                               places: Dict[str, Sequence[GlobalBlock]]) -> List[str]:
    """The parameters whose recorded rule is not what the config's init methods give for their
    global shape, when at least one of those methods depends on the shape ("name (method)")."""
    config = getattr(model, "config", None)
    if record is None or config is None:
        return []
    cache: Dict = {}
    methods = _config_methods(config)
    shaped = [(n, m) for n, m in methods
              if _rule_for(m, _PROBE_SHAPES[0], cache) != _rule_for(m, _PROBE_SHAPES[1], cache)]
    if not shaped:
        return []
    named = []
    for name, spec in record.specs.items():
        blocks = places.get(name)
        if not blocks or isinstance(spec, Constant):
            continue  # constants (norms, biases) have no shape in them
        block = blocks[0]
        lead = len(block.global_shape) - _own_dims(block)
        shape = tuple(block.global_shape[lead:])
        rule = without_stream(spec)
        if any(_rule_for(m, shape, cache) == rule for _, m in methods):
            continue
        named.append(f"{name} (config.{' / config.'.join(n for n, _ in shaped)})")
    return named


def _own_dims(block: GlobalBlock) -> int:
    """The dims of a block that are the parameter's own (Megatron's stacked axes have local
    size one and stride zero at the front)."""
    lead = 0
    for size, stride in zip(block.size, block.stride):
        if size == 1 and stride == 0 and lead < len(block.size) - 1:
            lead += 1
        else:
            break
    return len(block.size) - lead
