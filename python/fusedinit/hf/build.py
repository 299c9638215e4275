"""`from_config`: build a transformers model without paying for its initialization twice.

Stock `from_config` builds on CPU with torch's constructor init (every nn.Linear runs
kaiming_uniform_), then transformers' pass overwrites it all. Here the model is built with its
parameters on the meta device (constructor init costs nothing; buffers such as rotary
frequencies are computed for real), parameters are allocated directly on `device` (no CPU copy
for a GPU target), then the model's own init pass runs recorded and batched - one op call per
device - and weights are tied."""
from __future__ import annotations

import contextlib
import inspect
from typing import Optional

import torch
from torch import nn

from .patch import recording


@contextlib.contextmanager
def _parameters_on_meta():
    """Parameters registered inside are moved to the meta device (buffers stay real)."""
    original = nn.Module.register_parameter

    def register_parameter(self, name, param):
        if param is not None and param.device.type != "meta":
            meta = type(param)(param.to("meta"), requires_grad=param.requires_grad)
            meta.__dict__.update(param.__dict__)
            param = meta
        original(self, name, param)

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _no_init_weights():
    try:
        from transformers.initialization import no_init_weights  # transformers >= 5
    except ImportError:
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def materialize_(model: nn.Module, device: torch.device, progress: bool = False) -> None:
    """Allocate every meta parameter on `device` (uninitialized; tied parameters stay one
    tensor) and move buffers there."""
    from tqdm.auto import tqdm

    made = {}
    modules = list(model.modules())
    for module in tqdm(modules, desc="materialize", disable=not progress, leave=False):
        for name, param in list(module._parameters.items()):
            if param is None or param.device.type != "meta":
                continue
            if id(param) not in made:
                real = type(param)(torch.empty_like(param, device=device),
                                   requires_grad=param.requires_grad)
                real.__dict__.update(param.__dict__)
                made[id(param)] = real
            module._parameters[name] = made[id(param)]
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.device != device:
                module._buffers[name] = buf.to(device)


def from_config(config, *, model_class=None, device=None, dtype: Optional[torch.dtype] = None,
                seed: Optional[int] = None, progress: bool = False, **kwargs):
    """Like `model_class.from_config(config, ...)` (default AutoModelForCausalLM), with the
    model's own per-parameter init rules, on `device` (default CPU), written by fusedinit with
    `seed` (None: drawn from torch's default generator)."""
    from tqdm.auto import tqdm

    if model_class is None:
        from transformers import AutoModelForCausalLM
        model_class = AutoModelForCausalLM
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    # Auto classes have from_config, model classes _from_config (same arguments).
    build = getattr(model_class, "from_config", None) or model_class._from_config
    if dtype is not None:
        # transformers 5 takes dtype=, 4.x torch_dtype=
        params = inspect.signature(build).parameters
        kwargs["dtype" if "dtype" in params or _transformers_major() >= 5 else "torch_dtype"] = dtype
    steps = tqdm(total=4, desc="fusedinit.from_config", disable=not progress)
    with _parameters_on_meta(), _no_init_weights():
        model = build(config, **kwargs)
    steps.update()
    materialize_(model, device, progress)
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


def _transformers_major() -> int:
    import transformers
    return int(transformers.__version__.split(".")[0])
