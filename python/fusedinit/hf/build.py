"""`from_config`: build a transformers model without paying for its initialization twice.

Stock `from_config` builds on CPU with torch's constructor init (every nn.Linear runs
kaiming_uniform_), then transformers' pass overwrites it all. Here the model is built under
`torch.device("meta")` (a thread-local function mode: constructor init costs nothing, and
nothing process-wide is touched; transformers 4.x: parameters only, see _build_context), its
tensors are allocated directly on `device` (no CPU copy for a GPU target), then the model's own
init pass - which in transformers 5 initializes every parameter and buffer, as
`from_pretrained` relies on for missing keys - runs recorded and batched (engine.py): one op
call per device. Weights are tied last."""
from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..ops.seed import resolve_seed
from ..models.engine import recording


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


def _untie(model: nn.Module) -> list:
    """Give each tied target (lm_head.weight, ...) its own meta parameter for the init pass, as
    stock transformers initializes before tying: the pass then initializes the source alone
    (its padding row stays zero), the target's write costs nothing (meta tensors are not
    written), and tie_weights shares the source again afterwards. Returns what _retie needs."""
    targets = getattr(model, "all_tied_weights_keys", None)  # transformers 5: {target: source}
    if targets is None:
        targets = getattr(model, "_tied_weights_keys", None) or []  # 4.x: [target, ...]
    # Slots (module, attribute) holding each parameter: a module shared under two names (T5's
    # embed_tokens is `shared`) is one slot, named by its first name.
    slots, untied = {}, []
    for module_name, module in model.named_modules(remove_duplicate=True):
        for leaf, param in module._parameters.items():
            if param is not None:
                name = f"{module_name}.{leaf}" if module_name else leaf
                slots.setdefault(id(param), []).append((module, leaf, name))
    for held in slots.values():
        tied = [slot for slot in held if slot[2] in targets]
        if len(tied) == len(held):
            tied = tied[1:]  # one slot keeps the parameter
        for module, leaf, _ in tied if len(held) > 1 else ():
            param = module._parameters[leaf]
            placeholder = nn.Parameter(torch.empty_like(param, device="meta"),
                                       requires_grad=param.requires_grad)
            module._parameters[leaf] = placeholder
            untied.append((module, leaf, placeholder, param))
    return untied


def _retie(model: nn.Module, untied: list) -> None:
    """tie_weights, then any placeholder it did not replace shares its parameter again (the
    model's own sharing, whatever its tie_weights does)."""
    model.tie_weights()
    for module, leaf, placeholder, param in untied:
        if module._parameters.get(leaf) is placeholder:
            module._parameters[leaf] = param


class _ParametersOnMeta(TorchFunctionMode):
    """transformers 4.x: `torch.empty` without a device - how torch's layers allocate their
    parameters - gives meta tensors; everything else (buffers such as rotary frequencies, which
    4.x init passes do not recompute) is computed for real. Thread-local, like torch.device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.empty and kwargs.get("device") is None:
            kwargs = dict(kwargs, device="meta")
        return func(*args, **kwargs)


def _build_context():
    """Where the model is built: the meta device in transformers 5, whose init pass initializes
    every parameter and buffer (from_pretrained relies on it for missing keys); in 4.x only the
    parameters that torch's layers allocate."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return torch.device("meta")
    return _ParametersOnMeta()


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
    from ..ops.api import init_many_

    materialize_(model, device, parameters=False)
    untied = _untie(model)
    _forget_initialized(model)
    with recording(model, seed) as session:
        model.initialize_weights()
    if session.deferred_on_meta:
        raise RuntimeError(f"fusedinit.from_config: the init pass of {session.deferred_on_meta[:5]} "
                           "runs ops on drawn values that cannot be recorded on the meta device")
    specs = session.written
    _retie(model, untied)
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


def _forget_initialized(model: nn.Module) -> None:
    """Nothing was initialized (parameters were built on meta), but transformers 4.x marks
    every module initialized as it builds it: clear the marks so the pass sees every module."""
    for module in model.modules():
        module.__dict__.pop("_is_hf_initialized", None)


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
    with _build_context():
        model = build(config, **kwargs)
    steps.update()
    if device_mesh is not None:
        model = _from_config_sharded(model, device, device_mesh, seed)
        steps.update(3)
        steps.close()
        return model
    materialize_(model, device, progress)
    untied = _untie(model)
    steps.update()
    _forget_initialized(model)
    with recording(model, seed):
        model.initialize_weights()
    steps.update()
    _retie(model, untied)
    steps.update()
    steps.close()
    return model


def dtype_keyword(build) -> str:
    """The dtype argument of a transformers model builder: dtype= in 5.x, torch_dtype= in 4.x."""
    import transformers

    if "dtype" in inspect.signature(build).parameters:
        return "dtype"
    return "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
