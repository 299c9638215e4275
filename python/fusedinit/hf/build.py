"""`from_config`: build a transformers model without paying for its initialization twice.

Stock `from_config` builds on CPU with torch's constructor init (every nn.Linear runs
kaiming_uniform_), then transformers' pass overwrites it all. Here the model is built under
`torch.device("meta")` (a thread-local function mode: constructor init costs nothing, and
nothing process-wide is touched), its tensors are allocated directly on `device` (no CPU copy
for a GPU target), then the model's own init pass - which in transformers 5 initializes every
parameter and buffer, as `from_pretrained` relies on for missing keys - runs recorded and
batched (engine.py): one op call per device. Weights are tied last."""
from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch import nn

from .._seed import resolve_seed
from ..engine import recording


def materialize_(model: nn.Module, device: torch.device, progress: bool = False,
                 parameters: bool = True) -> None:
    """Allocate every meta parameter (with parameters=True) and meta buffer on `device`
    (uninitialized; tied parameters stay one tensor) and move other buffers there."""
    from tqdm.auto import tqdm

    made = {}
    modules = list(model.modules())
    for module in tqdm(modules, desc="materialize", disable=not progress, leave=False):
        for name, param in list(module._parameters.items()):
            if not parameters or param is None or param.device.type != "meta":
                continue
            if id(param) not in made:
                real = type(param)(torch.empty_like(param, device=device),
                                   requires_grad=param.requires_grad)
                real.__dict__.update(param.__dict__)
                made[id(param)] = real
            module._parameters[name] = made[id(param)]
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.device.type == "meta":
                module._buffers[name] = torch.empty_like(buf, device=device)
            elif buf is not None and buf.device != device:
                module._buffers[name] = buf.to(device)


def _untie(model: nn.Module) -> None:
    """Give each tied target (lm_head.weight, ...) its own meta parameter for the init pass, as
    stock transformers initializes before tying: the pass then initializes the source alone
    (its padding row stays zero), the target's write costs nothing (meta tensors are not
    written), and tie_weights shares the source again afterwards."""
    for target in getattr(model, "all_tied_weights_keys", None) or {}:
        owner, _, leaf = target.rpartition(".")
        try:
            module = model.get_submodule(owner)
        except AttributeError:
            continue
        param = module._parameters.get(leaf)
        if param is not None:
            module._parameters[leaf] = nn.Parameter(torch.empty_like(param, device="meta"),
                                                    requires_grad=param.requires_grad)


def _shard_fsdp2(model: nn.Module, mesh) -> None:
    """FSDP2 as torchtitan applies it: each transformer block (the model's _no_split_modules)
    its own group, then the root."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in list(model.modules()):
        if type(module).__name__ in blocks and module is not model:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _from_config_sharded(model: nn.Module, device: torch.device, mesh, seed) -> nn.Module:
    """Record the model's init rules with its parameters on the meta device (nothing allocated;
    buffers are real and initialized by the pass), shard it with FSDP2 on `mesh`, allocate each
    rank's shards on `device`, then write every shard - each element gets its value in the
    unsharded tensor - in one op call per device."""
    from ..api import init_many_

    materialize_(model, device, parameters=False)
    _untie(model)
    with recording(model, seed) as session:
        model.initialize_weights()
    if session.deferred_on_meta:
        raise RuntimeError(f"fusedinit.from_config: the init pass of {session.deferred_on_meta[:5]} "
                           "runs ops on drawn values that cannot be recorded on the meta device")
    specs = session.written
    model.tie_weights()
    buffers = {name: b for name, b in model.named_buffers()}
    _shard_fsdp2(model, mesh)
    model.to_empty(device=device)
    for name, b in buffers.items():  # to_empty left them uninitialized: restore the real ones
        owner, _, leaf = name.rpartition(".")
        model.get_submodule(owner)._buffers[leaf] = b.to(device)
    params = dict(model.named_parameters())
    missing = [n for n in params if n not in specs]
    if missing:
        raise RuntimeError(f"fusedinit.from_config: the model's init pass gave no rule for "
                           f"{missing[:5]} (rules recorded on meta must cover every parameter)")
    init_many_([(params[n], specs[n]) for n in params], seed=seed)
    return model


def from_config(config, *, model_class=None, device=None, dtype: Optional[torch.dtype] = None,
                seed: Optional[int] = None, progress: bool = False, device_mesh=None, **kwargs):
    """Like `model_class.from_config(config, ...)` (default AutoModelForCausalLM), with the
    model's own per-parameter init rules, on `device` (default CPU), written by fusedinit with
    `seed` (None: drawn from torch's default generator). With `device_mesh`, the model is
    sharded with FSDP2 (each block, then the root) on the mesh's device type unless `device`
    says otherwise, and every rank writes only its shards; the gathered state equals the
    unsharded model's bit for bit."""
    from tqdm.auto import tqdm

    if model_class is None:
        from transformers import AutoModelForCausalLM
        model_class = AutoModelForCausalLM
    if device is None:  # the mesh's device type when sharding, else CPU
        device = device_mesh.device_type if device_mesh is not None else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    # Auto classes have from_config, model classes _from_config (same arguments).
    build = getattr(model_class, "from_config", None) or model_class._from_config
    if dtype is not None:
        kwargs[dtype_keyword(build)] = dtype
    steps = tqdm(total=4, desc="fusedinit.from_config", disable=not progress)
    seed = resolve_seed(seed, None)
    with torch.device("meta"):
        model = build(config, **kwargs)
    steps.update()
    if device_mesh is not None:
        model = _from_config_sharded(model, device, device_mesh, seed)
        steps.update(3)
        steps.close()
        return model
    materialize_(model, device, progress)
    _untie(model)
    steps.update()
    for module in model.modules():  # nothing was initialized: let the pass see every module
        module.__dict__.pop("_is_hf_initialized", None)
    with recording(model, seed):
        model.initialize_weights()
    steps.update()
    model.tie_weights()
    steps.update()
    steps.close()
    return model


def dtype_keyword(build) -> str:
    """The dtype argument of a transformers model builder: dtype= in 5.x, torch_dtype= in 4.x."""
    import transformers

    if "dtype" in inspect.signature(build).parameters:
        return "dtype"
    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
