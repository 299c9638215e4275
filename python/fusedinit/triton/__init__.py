"""The Triton backend (needs the `triton` package; on CPU tensors only under TRITON_INTERPRET=1)."""
from __future__ import annotations

import os


def interpreting() -> bool:
    """TRITON_INTERPRET=1: Triton runs kernels in its numpy interpreter (CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def import_error() -> Exception | None:
    """Why the Triton backend cannot be used here, or None."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return exc
    return None


def init_(tensors, kinds, params, streams, padding_rows, seed: int, placements=None) -> None:
    from .launch import init_ as launch
    launch(tensors, kinds, params, streams, padding_rows, seed, placements)
