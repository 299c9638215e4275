"""fusedinit: weight initialization at the speed of writing memory, bit-identical on every
backend, layout and initialization order (see docs/rng.md for the random-stream contract)."""
import sys

from .ops import reference
from .ops.reference import CONTRACT_VERSION
from .ops.op import HAS_EXTENSION
from .ops.api import init_many_, normal_, trunc_normal_, uniform_
from .ops.specs import Constant, Normal, TruncNormal, Uniform
from .models.streams import param_stream
from .models.modules import init_module_
from .models.engine import fuse
from .torch_internals import FoldMismatchWarning
from .models.deferred import deferred_init, materialize_
from . import hf, megatron
from .hf import from_config, patch_transformers, patched_transformers, unpatch_transformers

# The oracle keeps its public path: `import fusedinit.reference` / `fusedinit.reference.init_`
# name the one module object in ops/ (so a patch of one is a patch of the other).
sys.modules[__name__ + ".reference"] = reference

__version__ = "0.1.0"


def available_backends():
    """Backends usable here: the compiled kernels this build has, plus the reference."""
    from .ops import op

    from .triton import import_error

    names = [d for d in ("cpu", "cuda") if op.has_kernel(d)]
    if import_error() is None:
        names.append("triton")
    return names + ["reference"]


__all__ = ["CONTRACT_VERSION", "normal_", "uniform_", "trunc_normal_", "init_many_", "Normal", "Uniform",
           "TruncNormal", "Constant", "reference", "available_backends", "HAS_EXTENSION",
           "init_module_", "fuse", "FoldMismatchWarning", "deferred_init", "materialize_", "param_stream", "hf", "megatron", "from_config", "patch_transformers",
           "unpatch_transformers", "patched_transformers",
           "__version__"]
