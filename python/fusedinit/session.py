"""A queue of pending writes for one model: (tensor, spec) pairs keyed by the tensor's memory,
each with the stream of its parameter's name, flushed as one `init_many_` call (one op call per
device). A later write to the same tensor replaces the pending one, so values that a model
overwrites during its own init pass are never computed."""
from __future__ import annotations

import dataclasses
import threading
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .api import init_many_
from .sharding import is_dtensor
from .specs import Constant, Normal
from .streams import param_stream

_local = threading.local()


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor is known by its local shard (the memory this rank writes)."""
    return t._local_tensor if is_dtensor(t) else t


def tensor_key(t: torch.Tensor) -> Optional[tuple]:
    """Identity of the memory a tensor covers: its storage object (shared by every alias,
    `.data` included, and distinct for distinct meta tensors too) and the region in it."""
    t = _local(t)
    try:
        storage = t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
        return None
    return (storage, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device)


def storage_of(t: torch.Tensor) -> Optional[Tuple[int, torch.device]]:
    t = _local(t)
    try:
        return (t.untyped_storage()._cdata, t.device)
    except (RuntimeError, NotImplementedError):
        return None


class InitSession:
    """Pending writes for the parameters and buffers of `root`, named relative to it."""

    def __init__(self, root: nn.Module, seed: int, prefix: str = "", record_only: bool = False):
        """record_only: keep the queue at the end (flush writes nothing) - for recording a
        model's rules on the meta device and applying them to its sharded parameters later."""
        self.root, self.seed, self.record_only = root, seed, record_only
        self.names: Dict[tuple, str] = {}
        for name, t in list(root.named_parameters(remove_duplicate=True)) + \
                list(root.named_buffers(remove_duplicate=True)):
            key = tensor_key(t)
            if key is not None:
                self.names.setdefault(key, prefix + name)
        self.pending: Dict[tuple, tuple] = {}   # key -> (tensor, spec)
        self._storages: Dict[tuple, int] = {}  # storages with pending writes -> count

    # -- queue --------------------------------------------------------------------------------
    def name_of(self, t: torch.Tensor) -> Optional[str]:
        key = tensor_key(t)
        return None if key is None else self.names.get(key)

    def queue(self, t: torch.Tensor, spec) -> bool:
        """Queue `spec` for `t` (a whole parameter or buffer of the root); False if `t` is not
        one. A constant for an integer buffer (BatchNorm's num_batches_tracked), which the
        kernels do not write, is written at once."""
        key = tensor_key(t)
        name = self.names.get(key) if key is not None else None
        if name is None:
            return False
        if not t.is_floating_point():
            if not isinstance(spec, Constant):
                return False
            with torch.no_grad():
                t.fill_(spec.value)
            return True
        if "stream" in {f.name for f in dataclasses.fields(spec)}:  # Constant draws nothing
            spec = dataclasses.replace(spec, stream=param_stream(name))
        if key not in self.pending:
            s = storage_of(t)
            self._storages[s] = self._storages.get(s, 0) + 1
        self.pending[key] = (t.detach(), spec)
        return True

    def zero_row(self, view: torch.Tensor) -> bool:
        """`view` is one whole row (dim 0) of a tensor with a pending Normal: make that row its
        padding row, written in the same pass. False if it is not."""
        s = storage_of(view)
        if s is None or s not in self._storages:
            return False
        for key, (t, spec) in self.pending.items():
            if (storage_of(t) != s or not isinstance(spec, Normal) or t.dim() == 0
                    or tuple(view.shape) != tuple(t.shape[1:])
                    or tuple(view.stride()) != tuple(t.stride()[1:]) or t.stride(0) == 0):
                continue
            row, rem = divmod(view.storage_offset() - t.storage_offset(), t.stride(0))
            if rem == 0 and 0 <= row < t.shape[0]:
                return self.pad_row(t, row)
        return False

    def pad_row(self, t: torch.Tensor, row: int) -> bool:
        """Row `row` (dim 0) of `t`, which has a pending Normal, becomes its padding row."""
        key = tensor_key(t)
        if key not in self.pending or not isinstance(self.pending[key][1], Normal):
            return False
        tensor, spec = self.pending[key]
        self.pending[key] = (tensor, dataclasses.replace(spec, padding_idx=row))
        return True

    def touches_pending(self, t: torch.Tensor) -> bool:
        s = storage_of(t)
        return s is not None and s in self._storages

    def drop(self, t: torch.Tensor) -> bool:
        """Forget the pending write of exactly `t` (about to be overwritten as a whole)."""
        key = tensor_key(t)
        if key is None or key not in self.pending:
            return False
        del self.pending[key]
        s = storage_of(t)
        self._storages[s] -= 1
        if not self._storages[s]:
            del self._storages[s]
        return True

    def specs_by_name(self) -> Dict[str, object]:
        """The pending spec of each parameter / buffer, by fully qualified name."""
        return {self.names[key]: spec for key, (_, spec) in self.pending.items()}

    def flush(self) -> None:
        """Write everything pending: one init_many_ call (one op call per device). Raises if the
        write fails - the modules are already marked initialized, so it must never be silent."""
        if not self.pending or self.record_only:
            return
        items = list(self.pending.values())
        self.pending.clear()
        self._storages.clear()
        with torch.no_grad():
            init_many_(items, seed=self.seed)


def current_session() -> Optional[InitSession]:
    return getattr(_local, "session", None)


class active_session:
    """Make `session` the current one for this thread; the previous one is restored on exit."""

    def __init__(self, session: InitSession):
        self.session = session
        self.outer = None

    def __enter__(self):
        self.outer = current_session()
        _local.session = self.session
        return self.session

    def __exit__(self, *exc):
        _local.session = self.outer
        return False
