"""Model-level rules, with no knowledge of kernels: which spec each parameter of a module gets
(Hugging Face's base `_init_weights` semantics), and `init_module_` for any nn.Module."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..ops.seed import resolve_seed
from .engine import recording
from ..ops.specs import Constant, Normal

_WEIGHT_LAYERS = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                  nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.modules.batchnorm._NormBase)
if hasattr(nn, "RMSNorm"):
    _NORMS = _NORMS + (nn.RMSNorm,)


def is_norm(module: nn.Module) -> bool:
    """Norm layers, including the many model-specific LayerNorm / RMSNorm classes."""
    name = type(module).__name__
    return isinstance(module, _NORMS) or "LayerNorm" in name or "RMSNorm" in name


def base_rules(module: nn.Module, std: float) -> Optional[list]:
    """(tensor, spec) for the direct parameters and buffers of `module` under Hugging Face's base
    `_init_weights` rules; None for module types those rules leave to other code."""
    out = []
    if isinstance(module, _WEIGHT_LAYERS):
        if getattr(module, "weight", None) is not None:
            out.append((module.weight, Normal(0.0, std)))
        if getattr(module, "bias", None) is not None:
            out.append((module.bias, Constant(0.0)))
    elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        out.append((module.weight, Normal(0.0, std, padding_idx=module.padding_idx)))
    elif is_norm(module):
        if getattr(module, "weight", None) is not None:
            out.append((module.weight, Constant(1.0)))
        if getattr(module, "bias", None) is not None:
            out.append((module.bias, Constant(0.0)))
        if getattr(module, "running_mean", None) is not None:
            out.append((module.running_mean, Constant(0.0)))
            out.append((module.running_var, Constant(1.0)))
            if getattr(module, "num_batches_tracked", None) is not None:
                out.append((module.num_batches_tracked, Constant(0.0)))
    else:
        return None
    return out


def generic_rules(module: nn.Module, std: float) -> list:
    """base_rules, extended to any module: its other floating-point parameters with two or more
    dimensions (fused expert weights, routers, custom projections) get N(0, std^2); 1-D ones
    (scales, biases of unknown meaning) are left as they are."""
    rules = base_rules(module, std)
    if rules is not None:
        return rules
    return [(p, Normal(0.0, std)) for p in module.parameters(recurse=False)
            if p.is_floating_point() and p.dim() >= 2]


def init_module_(module: nn.Module, *, std: float = 0.02, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, prefix: str = "") -> nn.Module:
    """Initialize every submodule of `module` in one op call per device: Linear / Conv / Bilinear
    weights N(0, std^2) and biases zero, Embedding N(0, std^2) with its padding row zero, norm
    weights one and biases zero (running stats reset), other floating parameters with >= 2 dims
    N(0, std^2). Each parameter's stream is the hash of its fully qualified name (`prefix` +
    name, so a submodule initialized alone with prefix "layers.3." gets exactly the values it
    gets inside the full model); a parameter shared by several modules (tied weights) follows
    the rule of the module its first name belongs to. Meta tensors are left alone."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    seed = resolve_seed(seed, generator)
    canonical = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        canonical.setdefault(id(t), name)
    rules = []  # every rule is built (and checked) before anything is queued or written
    for owner_name, owner in module.named_modules(remove_duplicate=False):
        for t, spec in generic_rules(owner, std):
            name = canonical.get(id(t))
            if name is not None and name.rpartition(".")[0] == owner_name:
                rules.append((t, spec))  # else a tied parameter: its first name's owner decides
    with torch.no_grad(), recording(module, seed, prefix) as session:
        for t, spec in rules:
            session.queue(t, spec)
    return module
