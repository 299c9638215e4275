"""The installed transformers' major version: 4.x and 5.x differ in how a model is built on
the meta device, in what its init pass covers and in the names of some arguments."""
from __future__ import annotations


def transformers_major() -> int:
    """The major version of the installed transformers (imported on the first call only)."""
    import transformers

    return int(transformers.__version__.split(".")[0])
