"""Streams for model parameters: a stable 64-bit hash of the fully qualified name, so a
parameter's values depend only on (seed, its name, its spec) - not on the order modules are
initialized in, which subset is initialized, or how the model is split across devices."""
from __future__ import annotations

import hashlib


def param_stream(name: str) -> int:
    """The stream of the parameter called `name` (e.g. "model.layers.0.mlp.up_proj.weight"):
    the first 8 bytes of BLAKE2b(name, digest_size=8) as a little-endian uint64."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")
