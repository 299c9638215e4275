"""Rows (dim 0) of sharded (DTensor) parameters: a DTensor `select` on a sharded dim would
gather the whole tensor, so `param[row]` during a recording hands out a meta placeholder
instead. The one thing init code does with such a row - zeroing an embedding's padding row - is
the pending normal's padding row; anything else is an error naming the supported way."""
from __future__ import annotations

import dataclasses
from typing import Dict

import torch

from ..ops.sharding import is_dtensor
from .queue import InitSession

aten = torch.ops.aten


@dataclasses.dataclass(frozen=True)
class Row:
    """A placeholder handed out for row `row` of the DTensor parameter `param`."""

    placeholder: torch.Tensor
    param: torch.Tensor
    row: int


class DTensorRows:
    def __init__(self, session: InitSession):
        self.session = session
        self.rows: Dict[int, Row] = {}  # id(placeholder) -> Row

    def select(self, func, args):
        """A placeholder for `param.select(0, row)` of a DTensor parameter, or None."""
        if len(args) < 3 or not is_dtensor(args[0]) or args[1] != 0 \
                or self.session.name_of(args[0]) is None:
            return None
        param, row = args[0], args[2] % args[0].shape[0]
        placeholder = torch.empty(param.shape[1:], dtype=param.dtype, device="meta")
        self.rows[id(placeholder)] = Row(placeholder, param, row)
        return placeholder

    def row_of(self, tensors):
        """The Row among `tensors`, if one is a placeholder."""
        for t in tensors:
            row = self.rows.get(id(t))
            if row is not None:
                return row
        return None

    def op_on(self, args, func, zeroes: bool):
        """An op on a row placeholder: zero_ of it (`zeroes`) is its parameter's padding row;
        anything else is refused."""
        row = self.rows.get(id(args[0])) if args else None
        if zeroes and row is not None and self.session.pad_row(row.param, row.row):
            return args[0]
        raise RuntimeError(f"fusedinit: {func} on a row of a sharded parameter during init is "
                           "not supported (only zeroing a padding row is); initialize with "
                           "fusedinit.from_config(..., device_mesh=...) instead")
