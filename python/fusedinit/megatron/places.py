"""Where each local parameter of a Megatron-Core model sits in the global model, read from
Megatron's own description of it: `model.sharded_state_dict()` (dist-checkpointing), whose
ShardedTensors give, per parameter, a global key (layers stacked along a prepended axis, experts
along another), the global shape and this rank's offset in it - the description Megatron's
checkpoints are saved and resharded with. ShardedTensorFactories (a gated MLP's fc1 cut into w
and v, grouped experts cut into experts and transposed) are built on a meta stand-in of the
parameter, or - when they copy - on its local indices, so their blocks are found as views of the
parameter whatever the factory does."""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List

import torch
from torch import nn

from ..models.places import (GlobalBlock, block_of, check_cover, local_indices, view_block,
                             whole_block)


def _leaves(tree) -> Iterator[object]:
    """The leaves of a (nested) sharded state dict: dicts, lists and tuples are walked."""
    if isinstance(tree, dict):
        tree = tree.values()
    elif not isinstance(tree, (list, tuple)):
        yield tree
        return
    for v in tree:
        yield from _leaves(v)


def _is_sharded_tensor(x) -> bool:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor
    return isinstance(x, ShardedTensor)


def _is_factory(x) -> bool:
    from megatron.core.dist_checkpointing.mapping import ShardedTensorFactory
    return isinstance(x, ShardedTensorFactory)


def _check_whole(name: str, st) -> None:
    if st.flattened_range is not None:
        raise ValueError(f"{name}: its ShardedTensor ({st.key}) is a flattened range; "
                         "fusedinit places whole local tensors (call sharded_state_dict "
                         "without a distributed optimizer's flattening)")


def _built_leaves(name: str, factory, data: torch.Tensor) -> List[object]:
    """The ShardedTensors `factory` builds on `data` instead of the parameter."""
    with torch.no_grad():
        built = dataclasses.replace(factory, data=data).build()
    leaves = []
    for leaf in _leaves([built]):
        if _is_factory(leaf):
            raise NotImplementedError(f"{name}: a ShardedTensorFactory that builds another "
                                      "factory is not supported")
        if _is_sharded_tensor(leaf):  # (LocalNonpersistentObject flags and the like: skipped)
            _check_whole(name, leaf)
            leaves.append(leaf)
    return leaves


def _factory_blocks(name: str, param: torch.Tensor, factory) -> List[GlobalBlock]:
    """The blocks of `param` a factory describes. The factory is built on a meta stand-in
    first: blocks that are views of it (a gated MLP's chunks) are read off their strides, with
    nothing allocated. A factory that copies (grouped experts: `.contiguous()` of transposed
    views) is built again on the parameter's local indices - its build functions view, chunk,
    transpose and copy, they do not compute - and each block is matched to a strided view of
    the parameter (one index per element, for as long as that takes)."""
    stand_in = torch.empty(param.shape, dtype=param.dtype, device="meta")
    leaves = _built_leaves(name, factory, stand_in)
    if all(leaf.data is stand_in or leaf.data._base is stand_in for leaf in leaves):
        return [view_block(leaf.data, leaf.key, leaf.global_shape, leaf.global_offset)
                for leaf in leaves]
    blocks = []
    local = local_indices(param.shape)
    for leaf in _built_leaves(name, factory, local):
        block = block_of(leaf.data, local, leaf.key, leaf.global_shape, leaf.global_offset)
        if block is None:
            raise ValueError(f"{name}: the block {leaf.key} at {leaf.global_offset} of its "
                             "ShardedTensorFactory is not a strided view of the parameter")
        blocks.append(block)
    return blocks


def global_places(model: nn.Module) -> Dict[str, List[GlobalBlock]]:
    """For each parameter of a Megatron-Core `model` (by its name in `model`), the blocks of
    global tensors it holds, from `model.sharded_state_dict()`: the global key (the stream),
    global shape and offset. Raises naming any parameter that description leaves out or that
    is not a whole local tensor (a distributed optimizer's flattened range)."""
    if not callable(getattr(model, "sharded_state_dict", None)):
        raise TypeError(f"model must be a Megatron-Core module (with sharded_state_dict()), got "
                        f"{type(model).__name__}")
    params = dict(model.named_parameters(remove_duplicate=True))
    names = {id(p): name for name, p in params.items()}
    places: Dict[str, List[GlobalBlock]] = {}
    for leaf in _leaves(model.sharded_state_dict()):
        if not (_is_sharded_tensor(leaf) or _is_factory(leaf)):
            continue  # ShardedObjects (extra state), plain values
        name = names.get(id(leaf.data))
        if name is None or name in places:
            # Not a parameter (a buffer's state), or a parameter described twice (a tied output
            # layer under the embedding's key): the first description places it.
            continue
        param = params[name]
        if not param.is_contiguous():
            raise ValueError(f"{name}: not contiguous; fusedinit places contiguous parameters")
        if _is_factory(leaf):
            blocks = _factory_blocks(name, param, leaf)
        else:
            _check_whole(name, leaf)
            if tuple(leaf.local_shape) != tuple(param.shape):
                raise ValueError(f"{name}: its ShardedTensor {leaf.key} has local shape "
                                 f"{tuple(leaf.local_shape)}, the parameter {tuple(param.shape)}")
            blocks = [whole_block(param.shape, leaf.key, leaf.global_shape, leaf.global_offset)]
        check_cover(name, param.numel(), blocks)
        places[name] = blocks
    missing = [n for n in params if n not in places]
    if missing:
        raise ValueError(f"model.sharded_state_dict() does not describe {', '.join(missing[:8])}"
                         f"{' and more' if len(missing) > 8 else ''}: their place in the global "
                         "model is unknown, so their values would depend on the parallel layout")
    return places
