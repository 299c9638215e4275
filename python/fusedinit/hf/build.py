"""`from_config`: build a transformers model without paying for its initialization twice.

Stock `from_config` builds on CPU with torch's constructor init (every nn.Linear runs
kaiming_uniform_), then transformers' pass overwrites it all. Here the model is built under
`torch.device("meta")` (a thread-local function mode: constructor init costs nothing, and
nothing process-wide is touched; transformers 4.x: parameters only, see _build_context), its
tensors are allocated directly on `device` (no CPU copy for a GPU target), then the model's own
init pass - which in transformers 5 initializes every parameter and buffer, as
`from_pretrained` relies on for missing keys - runs recorded and batched (engine.py): one op
call per device. Weights are tied last.

Allocation and writes go through the path of `fusedinit.materialize_` (models/deferred.py):
`allocate_and_write_` with the init pass as `init`; sharded (`device_mesh=`), the pass is first
recorded on meta parameters (`record_on_meta_`, as `deferred_init` records a constructor), the
model sharded with FSDP2, then `allocate_and_write_` writes the record into each rank's
shards."""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..ops.seed import resolve_seed
from ..models.deferred import allocate_and_write_, record_on_meta_
from .versions import transformers_major


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


@contextmanager
def _untied_weights(model: nn.Module) -> Iterator[None]:
    """Tied targets untied inside the block (_untie), tied again when it ends without raising
    (when it raises, the caller puts the model back or drops it)."""
    untied = _untie(model)
    yield
    _retie(model, untied)


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
    if transformers_major() >= 5:
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
    steps = tqdm(total=3, desc="fusedinit.from_config", disable=not progress)
    seed = resolve_seed(seed, None)
    with _build_context():
        model = build(config, **kwargs)
    steps.update()

    def init_pass(m: nn.Module) -> None:
        _forget_initialized(m)
        m.initialize_weights()

    def step(stage: str) -> None:  # "allocated", then "written"
        steps.update()

    if device_mesh is None:
        allocate_and_write_(model, device, seed, init=init_pass, keep_parameters=True,
                            around=_untied_weights, progress=step,
                            caller="fusedinit.from_config")
    else:
        # The pass recorded with the parameters on meta (nothing allocated for them; buffers
        # real), then FSDP2, then each rank allocates its shards and writes them: each element
        # gets its value in the unsharded tensor.
        with _untied_weights(model):
            record_on_meta_(model, init_pass, buffer_device=device)
        _shard_fsdp2(model, device_mesh)
        allocate_and_write_(model, device, seed, progress=step, caller="fusedinit.from_config")
    steps.close()
    return model


def dtype_keyword(build) -> str:
    """The dtype argument of a transformers model builder: dtype= in 5.x, torch_dtype= in 4.x."""
    if "dtype" in inspect.signature(build).parameters:
        return "dtype"
    return "dtype" if transformers_major() >= 5 else "torch_dtype"
