"""fusedinit for Hugging Face transformers: `fused_init_weights`, `patch_transformers`,
`from_config`. Importing this module does not import transformers."""
from .build import from_config
from .init_weights import config_std, fused_init_weights
from .patch import is_patched, patch_transformers, patched_transformers, unpatch_transformers

__all__ = ["fused_init_weights", "config_std", "patch_transformers", "unpatch_transformers",
           "patched_transformers", "is_patched", "from_config"]
