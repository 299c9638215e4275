"""fusedinit: weight initialization at the speed of writing memory, bit-identical on every
backend, layout and initialization order (see docs/rng.md for the random-stream contract)."""
from . import reference
from .reference import CONTRACT_VERSION
from ._ops import HAS_EXTENSION
from .api import init_many_, normal_, trunc_normal_, uniform_
from .specs import Constant, Normal, TruncNormal, Uniform
from .streams import param_stream
from .modules import init_module_
from .engine import fuse
from .deferred import deferred_init, materialize_
from . import hf
from .hf import from_config, patch_transformers, patched_transformers, unpatch_transformers

__version__ = "0.1.0"


def available_backends():
    """Backends usable here: the compiled kernels this build has, plus the reference."""
    from . import _ops

    from .triton import import_error

    names = [d for d in ("cpu", "cuda") if _ops.has_kernel(d)]
    if import_error() is None:
        names.append("triton")
    return names + ["reference"]


__all__ = ["CONTRACT_VERSION", "normal_", "uniform_", "trunc_normal_", "init_many_", "Normal", "Uniform",
           "TruncNormal", "Constant", "reference", "available_backends", "HAS_EXTENSION",
           "init_module_", "fuse", "deferred_init", "materialize_", "param_stream", "hf", "from_config", "patch_transformers",
           "unpatch_transformers", "patched_transformers",
           "__version__"]
