"""Host side of the Triton backend: tensors -> metadata tables -> one launch per group of
tensors that share a dtype and a layout class (aligned contiguous, other contiguous, strided)."""
from __future__ import annotations

import math
import struct
import threading
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import torch

from ..ops.normal_table import COEFFS
from . import interpreting
from . import kernel as K

BLOCK = 4096
NUM_WARPS = 8
_STORE = {torch.float32: K.F32, torch.float64: K.F64, torch.bfloat16: K.BF16, torch.float16: K.F16}


def _one_minus(bits: int) -> int:
    """The float32 bits of 1 - x for the float32 bits of x in [1, 2) (exact)."""
    x = struct.unpack("<f", struct.pack("<I", bits))[0]
    if not 1.0 <= x < 2.0:
        raise ValueError(f"expansion point {x} outside [1, 2)")
    return struct.unpack("<I", struct.pack("<f", 1.0 - x))[0]


def _table_rows() -> torch.Tensor:
    """The 64 x 8 row-major coefficient table as int64 pairs of float32 bit patterns (little
    endian: even column in the low half), after K.TABLE_SKIP zero rows (the kernel indexes
    row r at r + TABLE_SKIP, which saves it a subtraction per value), on the CPU. The last
    column holds 1 - m instead of the expansion point m: the kernel's s = t - m is one fma
    of the mantissa field (K._half_normal_quantile)."""
    rows = torch.zeros(K.TABLE_SKIP + 64, K.TABLE_STRIDE, dtype=torch.int32)
    for k, column in enumerate(COEFFS):
        if k == K.TABLE_STRIDE - 1:
            column = [_one_minus(b) for b in column]
        rows[K.TABLE_SKIP:, k] = torch.tensor([b - (1 << 32) if b >= 1 << 31 else b
                                               for b in column], dtype=torch.int32)
    return rows.flatten().view(torch.int64)


_TABLE_ROWS = _table_rows()  # built at import: no first-use work inside a launch


class CaptureStaging:
    """Pinned host memory for the metadata of launches recorded into CUDA graphs.

    A captured host-to-device copy reads its source at every replay, so that memory must stay
    as it is for as long as the graph lives - and nothing tells us when a graph dies. Eager
    launches pin per call (torch's caching host allocator reuses that memory once the copy is
    done); under capture, allocating pinned memory queries CUDA events, which invalidates a
    capture on torch versions without a capture-aware host allocator. So the arena is pinned
    outside capture and handed out from under capture by a bump pointer, never reused: each
    captured launch keeps its bytes for the life of the process (a few hundred bytes per
    launch)."""

    def __init__(self, nbytes: int, pin: bool = True):
        self._arena = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
        self._used = 0
        self._lock = threading.Lock()

    @property
    def free_bytes(self) -> int:
        return self._arena.numel() - self._used

    def hold(self, host: torch.Tensor) -> torch.Tensor:
        """A copy of `host` (CPU, contiguous) in the arena, 16-byte aligned, kept forever."""
        raw = host.reshape(-1).view(torch.uint8)
        with self._lock:
            start = -(-self._used // 16) * 16
            if start + raw.numel() > self._arena.numel():
                raise RuntimeError(
                    "fusedinit (Triton backend): the pinned memory reserved for launches inside "
                    f"CUDA graph capture is used up ({self._arena.numel()} bytes); call "
                    "fusedinit once outside capture between captures (that reserves more)")
            self._used = start + raw.numel()
        held = self._arena[start: start + raw.numel()]
        held.copy_(raw)  # a host-side copy: no CUDA call
        return held.view(host.dtype).view(host.shape)


_STAGING_BYTES = 1 << 20  # ~4500 tensors' metadata under capture before a new arena is needed


class _DeviceState:
    """What a launch on one device needs ready before any capture: the coefficient table on
    the device and the pinned staging arena for captured launches."""

    def __init__(self, table: torch.Tensor, staging: Optional[CaptureStaging]):
        self.table = table
        self.staging = staging


_devices: Dict[torch.device, _DeviceState] = {}
_devices_lock = threading.Lock()
# Arenas and tables replaced or forgotten: graphs captured earlier still read from them, so
# they are never freed (their memory would be reused: pinned memory by torch's host cache).
_retired: List[object] = []


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def device_state(device: torch.device, capturing: Optional[bool] = None) -> _DeviceState:
    """The device's table and staging arena, made at the first use outside capture
    (`capturing`: whether the current stream is capturing, if the caller asked already).

    The first use cannot be inside CUDA graph capture: copying the table there would put a
    synchronizing copy (and an allocation the graph's pool would own) into the capture. That
    is refused with a clear error before any CUDA call; torch asks for a warm-up call outside
    capture anyway."""
    state = _devices.get(device)
    if capturing is None:
        capturing = _capturing(device)
    if state is not None and (capturing or state.staging is None
                              or state.staging.free_bytes >= _STAGING_BYTES // 2):
        return state
    if capturing:
        raise RuntimeError(
            f"fusedinit (Triton backend): first use on {device} inside CUDA graph capture; "
            f"call fusedinit once on {device} before capturing (as torch asks of a warm-up), "
            "so that its coefficient table is on the device")
    with _devices_lock:
        state = _devices.get(device)
        if state is None:
            table = _TABLE_ROWS.to(device)
            if table.data_ptr() % 16:  # the kernel reads a row with two 16-byte loads
                raise RuntimeError(f"fusedinit (Triton backend): coefficient table on {device} "
                                   "is not 16-byte aligned")
            state = _DeviceState(table, None)
        if device.type == "cuda" and (state.staging is None
                                      or state.staging.free_bytes < _STAGING_BYTES // 2):
            if state.staging is not None:
                _retired.append(state.staging)
            state.staging = CaptureStaging(_STAGING_BYTES)
        _devices[device] = state
    return state


def normal_table(device: torch.device) -> torch.Tensor:
    """The coefficient table on `device`, copied there once per device."""
    return device_state(device).table


def forget_device(device: torch.device) -> None:
    """Forget the device's table and arena (tests: the next use is a first use again). Both
    are retired, not freed: graphs captured before may still read from them."""
    with _devices_lock:
        state = _devices.pop(device, None)
        if state is not None:
            _retired.append(state)


def merged_dims(t: torch.Tensor):
    """Sizes and strides with size-1 dims dropped and mutually contiguous dims merged."""
    sizes: List[int] = []
    strides: List[int] = []
    for size, stride in zip(t.shape, t.stride()):
        if size == 1:
            continue
        if sizes and strides[-1] == size * stride:
            sizes[-1] *= size
            strides[-1] = stride
        else:
            sizes.append(size)
            strides.append(stride)
    return (sizes, strides) if sizes else ([1], [1])


def _layout(t: torch.Tensor) -> str:
    if not t.is_contiguous():
        return "strided"
    return "aligned" if t.data_ptr() % 16 == 0 else "contiguous"


def init_(tensors: Sequence[torch.Tensor], kinds, params, streams, padding_rows, seed: int,
          placements=None):
    """Same arguments as fusedinit::init_ (streams and seed as uint64, one (offset, run,
    run_stride) placement per tensor or None), tensors on one device. Launches on that device
    (whichever device is current) and on its current stream."""
    if tensors and tensors[0].device.type == "cuda":
        with torch.cuda.device(tensors[0].device):
            return _init(tensors, kinds, params, streams, padding_rows, seed, placements)
    return _init(tensors, kinds, params, streams, padding_rows, seed, placements)


def _init(tensors, kinds, params, streams, padding_rows, seed, placements):
    offsets = list(placements) if placements is not None else [(0, 0, 0)] * len(tensors)
    groups = defaultdict(list)
    for i, t in enumerate(tensors):
        if t.numel() == 0:
            continue
        layout = _layout(t)
        dims = len(merged_dims(t)[0]) if layout == "strided" else 1
        if dims > K.MAX_DIMS:
            raise RuntimeError(f"fusedinit.init_: tensors[{i}] needs {dims} strided dimensions; "
                               f"the Triton kernel addresses at most {K.MAX_DIMS} (make it "
                               "contiguous first)")
        unit = 8 if t.element_size() == 2 else 4
        groups[(t.dtype, layout, all(x % unit == 0 for x in offsets[i]),
                offsets[i][1] != 0)].append(i)
    launches = []
    for (dtype, layout, index_aligned, has_runs), members in groups.items():
        # Every tensor of a launch is addressed from the first one's pointer in elements.
        by_base = defaultdict(list)
        for i in members:
            by_base[tensors[i].data_ptr() % tensors[i].element_size()].append(i)
        launches.extend((dtype, layout, (index_aligned, has_runs), group)
                        for group in by_base.values())
    for dtype, layout, index_class, group in launches:
        _launch(dtype, layout, index_class, [tensors[i] for i in group], [kinds[i] for i in group],
                [params[6 * i: 6 * i + 6] for i in group], [streams[i] for i in group],
                [padding_rows[i] for i in group], [offsets[i] for i in group], seed)


def round_keys(seed: int) -> List[int]:
    """The 20 Philox4x32-10 round keys of a uint64 seed (k0, k1 of round 0, of round 1, ...),
    as int32 (the kernel's key0..key19 arguments read them back as uint32 words)."""
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    keys = []
    for _ in range(10):
        keys += [k0, k1]
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return [k - (1 << 32) if k >= 1 << 31 else k for k in keys]


def _meta_row(t: torch.Tensor, offset: int, first_block: int, kind: int, stream: int,
              padding_row: int, strided: bool, placement=(0, 0, 0)) -> List[int]:
    row = [0] * K.META_COLS
    row[K.COL_INDEX_OFFSET], row[K.COL_RUN], row[K.COL_RUN_STRIDE] = placement
    row[K.COL_OFFSET] = offset
    row[K.COL_NUMEL] = t.numel()
    row[K.COL_FIRST_BLOCK] = first_block
    if padding_row >= 0:
        width = t.numel() // t.shape[0]
        row[K.COL_PAD_BEGIN] = padding_row * width
        row[K.COL_PAD_END] = (padding_row + 1) * width
    row[K.COL_STREAM] = stream - (1 << 64) if stream >= 1 << 63 else stream  # int64 bits
    row[K.COL_KIND] = kind
    if strided:
        sizes, strides = merged_dims(t)
        row[K.COL_NDIM] = len(sizes)
        row[K.COL_SIZES: K.COL_SIZES + len(sizes)] = sizes
        row[K.COL_SIZES + K.MAX_DIMS: K.COL_SIZES + K.MAX_DIMS + len(strides)] = strides
    return row


def _launch(dtype, layout, index_class, tensors, kinds, params, streams, padding_rows,
            placements, seed):
    device = tensors[0].device
    esize = tensors[0].element_size()
    base = tensors[0]
    rows, first_block = [], 0
    for j, t in enumerate(tensors):
        rows.append(_meta_row(t, (t.data_ptr() - base.data_ptr()) // esize, first_block, kinds[j],
                              streams[j], padding_rows[j], layout == "strided",
                              placements[j]))
        first_block += -(-t.numel() // BLOCK)
    meta = torch.tensor(rows, dtype=torch.int64)
    flat_params = torch.tensor([float(x) for p in params for x in p], dtype=torch.float32)
    capturing = _capturing(device)
    state = device_state(device, capturing)  # may refuse a first use under capture
    non_blocking = device.type == "cuda"
    if capturing:
        meta, flat_params = state.staging.hold(meta), state.staging.hold(flat_params)
    elif non_blocking:
        meta, flat_params = meta.pin_memory(), flat_params.pin_memory()
    # The first tensor is the kernel's pointer; the others are element offsets from it.
    K.init_kernel[(first_block,)](
        base, meta.to(device, non_blocking=non_blocking),
        flat_params.to(device, non_blocking=non_blocking), state.table, len(tensors),
        *round_keys(seed),
        STORE=_STORE[dtype], STRIDED=layout == "strided", ALIGNED=layout == "aligned",
        NATIVE=not interpreting(), UNIT=8 if esize == 2 else 4, BLOCK=BLOCK,
        SEARCH_STEPS=math.ceil(math.log2(len(tensors))) if len(tensors) > 1 else 0,
        ONLY_KIND=-1, INDEX_ALIGNED=index_class[0], HAS_RUNS=index_class[1], num_warps=NUM_WARPS,
        enable_fp_fusion=False)
