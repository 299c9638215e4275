"""The random-stream contract (docs/rng.md) as a Triton kernel, mirroring rng_math.h line by
line: Philox4x32-10, the word transforms, rounding to the destination and the store.

One launch fills every tensor of one dtype and layout: tensors are addressed as element
offsets from the first tensor's pointer, and a program finds its tensor by binary search
over each tensor's first block. With NATIVE (compiled for a GPU) the count-leading-zeros
and the float32 -> 16-bit round-to-nearest-even use the hardware instructions; without it
(the interpreter, which has neither) exact integer code computes the same function.
"""
import triton
import triton.language as tl

# Per-tensor metadata columns (int64 table, one row per tensor).
COL_OFFSET, COL_NUMEL, COL_FIRST_BLOCK, COL_PAD_BEGIN, COL_PAD_END, COL_STREAM, COL_KIND, \
    COL_NDIM, COL_INDEX_OFFSET, COL_RUN, COL_RUN_STRIDE = range(11)
COL_SIZES = 11           # 8 sizes, then 8 strides (strided layout only)
MAX_DIMS = 8
META_COLS = COL_SIZES + 2 * MAX_DIMS
TABLE_STRIDE = 8         # normal table: 64 rows of 8 floats (c0..c6, 1 - expansion point m)
TABLE_SKIP = 254         # unused rows before row 0: the kernel indexes rows by f >> 22

# The Philox round keys are kernel arguments key0..key19 (launch.round_keys): not specialized
# on their values (each seed would be a compilation).
KEY_ARGS = [f"key{i}" for i in range(20)]

# Destination codes (constexpr STORE).
F32, F64, BF16, F16 = 0, 1, 2, 3


# The same numbers as constexprs, which is how a @triton.jit function may read globals.
_COL_OFFSET = tl.constexpr(COL_OFFSET)
_COL_NUMEL = tl.constexpr(COL_NUMEL)
_COL_FIRST_BLOCK = tl.constexpr(COL_FIRST_BLOCK)
_COL_PAD_BEGIN = tl.constexpr(COL_PAD_BEGIN)
_COL_PAD_END = tl.constexpr(COL_PAD_END)
_COL_STREAM = tl.constexpr(COL_STREAM)
_COL_KIND = tl.constexpr(COL_KIND)
_COL_NDIM = tl.constexpr(COL_NDIM)
_COL_INDEX_OFFSET = tl.constexpr(COL_INDEX_OFFSET)
_COL_RUN = tl.constexpr(COL_RUN)
_COL_RUN_STRIDE = tl.constexpr(COL_RUN_STRIDE)
_COL_SIZES = tl.constexpr(COL_SIZES)
_MAX_DIMS = tl.constexpr(MAX_DIMS)
_META_COLS = tl.constexpr(META_COLS)
_TABLE_STRIDE = tl.constexpr(TABLE_STRIDE)
_F32 = tl.constexpr(F32)
_F64 = tl.constexpr(F64)
_BF16 = tl.constexpr(BF16)
_F16 = tl.constexpr(F16)


@triton.jit
def _philox(c0, c1, c2, c3, keys):
    """Philox4x32-10 with the round keys `keys` (k0, k1 of round 0, of round 1, ...: kernel
    arguments, read by the xors from the constant bank). Counter words may be scalars: what
    depends on scalars only stays scalar, computed once for all groups of a program."""
    for i in tl.static_range(10):
        # One 32x32 -> 64-bit multiply gives both halves (IMAD.WIDE.U32).
        p0 = c0.to(tl.uint64) * 0xD2511F53
        p1 = c2.to(tl.uint64) * 0xCD9E8D57
        hi0 = (p0 >> 32).to(tl.uint32)
        lo0 = p0.to(tl.uint32)
        hi1 = (p1 >> 32).to(tl.uint32)
        lo1 = p1.to(tl.uint32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ keys[2 * i], lo1, hi0 ^ c3 ^ keys[2 * i + 1], lo0
    return c0, c1, c2, c3


@triton.jit
def _group_words(g, stream_lo, stream_hi, keys):
    """The four words of Philox groups g (int64): counter (g lo, g hi, stream lo, stream hi)."""
    zero = tl.zeros_like(g).to(tl.uint32)
    return _philox(g.to(tl.uint32), (g >> 32).to(tl.uint32), zero + stream_lo, zero + stream_hi,
                   keys)


@triton.jit
def _set_lanes(w, lane, first: tl.constexpr, x0, x1, x2, x3):
    """w with lanes first..first + 3 of each row set to that row's x0..x3."""
    w = tl.where(lane == first + 0, x0[:, None], w)
    w = tl.where(lane == first + 1, x1[:, None], w)
    w = tl.where(lane == first + 2, x2[:, None], w)
    return tl.where(lane == first + 3, x3[:, None], w)


@triton.jit
def _clz(x, NATIVE: tl.constexpr):
    """Leading zeros of a non-zero uint32."""
    if NATIVE:
        n = tl.extra.cuda.libdevice.clz(x.to(tl.int32, bitcast=True))
    else:
        n = tl.zeros(x.shape, tl.int32)
        for shift in tl.static_range(5):
            width: tl.constexpr = 16 >> shift
            top = (x >> (32 - width)) == 0
            n = tl.where(top, n + width, n)
            x = tl.where(top, x << width, x)
    return n.to(tl.uint32)


@triton.jit
def _f32(bits):
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _bits(x):
    return x.to(tl.uint32, bitcast=True)


@triton.jit
def _fma(a, b, c, NATIVE: tl.constexpr):
    """a * b + c in float32 with one rounding (rng_math.h fma_rn). Compiled: the PTX fma.rn.f32
    as inline asm, which benchmarks/sass_report.py tells from a contracted one. Interpreted
    (numpy would round twice): the float64 product is exact, the float64 sum is made
    round-to-odd (TwoSum error, then the odd neighbour), and rounding that to float32 is exact
    (reference.fma_f32)."""
    if NATIVE:
        r = tl.inline_asm_elementwise("fma.rn.f32 $0, $1, $2, $3;", "=f,f,f,f", [a, b, c],
                                      dtype=tl.float32, is_pure=True, pack=1)
    else:
        p = a.to(tl.float64) * b.to(tl.float64)
        c64 = c.to(tl.float64)
        s = p + c64
        bb = s - p
        e = (p - (s - bb)) + (c64 - bb)
        bits = s.to(tl.int64, bitcast=True)
        inexact_even = (e != 0) & ((bits & 1) == 0) & (s - s == 0)  # s - s == 0: s finite
        step = tl.where((e > 0) == (s > 0), 1, -1).to(tl.int64)
        r = tl.where(inexact_even, bits + step, bits).to(tl.float64, bitcast=True).to(tl.float32)
    return r


@triton.jit
def _half_normal_quantile(f, table, NATIVE: tl.constexpr):
    """The quantile of the argument whose octave and mantissa are those of the float32 bits f
    (biased exponent 127 + octave, mantissa field mant23): its row 2 * octave + the top
    mantissa bit is (f >> 22) - TABLE_SKIP, its t = 1.mant23 is f's significand."""
    # The table as int64 pairs of float32 (c0|c1, c2|c3, c4|c5, c6|1-m): a 32-byte row.
    # Row r is stored at index r + TABLE_SKIP (launch.py): indexed by f >> 22 itself.
    if NATIVE:
        # The row's address ((f >> 22) * 32 bytes from the table, one wide multiply-add) and
        # its two 16-byte loads in one block: rows are 32 bytes apart from a table that is
        # 16-byte aligned (launch.normal_table checks), so both loads are aligned.
        c01, c23, c45, c6n = tl.inline_asm_elementwise(
            "{ .reg .u32 r; .reg .u64 a; shr.u32 r, $4, 22; mad.wide.u32 a, r, 32, $5; "
            "ld.global.nc.v2.u64 {$0, $1}, [a]; ld.global.nc.v2.u64 {$2, $3}, [a+16]; }",
            "=l,=l,=l,=l,r,l", [f, table.to(tl.int64, bitcast=True)],
            dtype=(tl.int64, tl.int64, tl.int64, tl.int64), is_pure=True, pack=1)
    else:
        pairs = table + (f >> 22) * (_TABLE_STRIDE // 2)
        c01 = tl.load(pairs + 0)
        c23 = tl.load(pairs + 1)
        c45 = tl.load(pairs + 2)
        c6n = tl.load(pairs + 3)
    # s = t - m, exact (m in [1.25, 1.75]): the mantissa field read as a subnormal float32 is
    # (t - 1) * 2^-126, so (t - 1) * 2^126 + (1 - m) is t - m with nothing to round.
    s = _fma(_f32(f & 0x7fffff), tl.full(f.shape, 8.507059173023462e+37, tl.float32),  # 2^126
             _hi_f32(c6n), NATIVE)
    r = _lo_f32(c6n)
    r = _fma(r, s, _hi_f32(c45), NATIVE)
    r = _fma(r, s, _lo_f32(c45), NATIVE)
    r = _fma(r, s, _hi_f32(c23), NATIVE)
    r = _fma(r, s, _lo_f32(c23), NATIVE)
    r = _fma(r, s, _hi_f32(c01), NATIVE)
    r = _fma(r, s, _lo_f32(c01), NATIVE)
    return r


@triton.jit
def _lo_f32(pair):
    return pair.to(tl.uint32).to(tl.float32, bitcast=True)


@triton.jit
def _hi_f32(pair):
    return (pair >> 32).to(tl.uint32).to(tl.float32, bitcast=True)


@triton.jit
def _normal(w, mean, std, table, NATIVE: tl.constexpr):
    k = (w << 1) | 1
    if NATIVE:
        # k rounded toward zero to float32 keeps exactly its leading 24 bits: the bits are
        # (127 + octave) << 23 | mant23 (rng_math.h normal_word), in one conversion.
        f = _bits(tl.extra.cuda.libdevice.uint2float_rz(k))
    else:
        lz = _clz(k, NATIVE)
        f = ((158 - lz) << 23) | (((k << lz) >> 8) & 0x7fffff)
    r = _half_normal_quantile(f, table, NATIVE)
    z = _f32(_bits(r) ^ (w & 0x80000000))
    return _fma(std, z, mean, NATIVE)


@triton.jit
def _uniform(w, a, b, NATIVE: tl.constexpr):
    u = (w >> 8).to(tl.float32) * 5.9604644775390625e-08  # 2^-24
    return _fma(b - a, u, a, NATIVE)


@triton.jit
def _trunc_normal(w, mean, std, a, b, p_lo, p_hi, table, NATIVE: tl.constexpr):
    u = ((w >> 9) << 1 | 1).to(tl.float32) * 5.9604644775390625e-08
    p = _fma(p_hi - p_lo, u, p_lo, NATIVE)
    lower = p < 0.5
    tail = tl.where(lower, p, 1.0 - p)
    q = tail + tail
    q = tl.where(q < 2.3283064365386963e-10, 2.3283064365386963e-10, q)  # 2^-32
    q = tl.where(q > 0.99999994039535522, 0.99999994039535522, q)        # 1 - 2^-24
    # q's octave is its exponent + 32: the bits of q * 2^32 (exponent field + 32, exact).
    z = _half_normal_quantile(_bits(q) + (32 << 23), table, NATIVE)
    z = tl.where(lower, _f32(_bits(z) ^ 0x80000000), z)
    v = _fma(std, z, mean, NATIVE)
    v = tl.where(v < a, a, v)
    v = tl.where(v > b, b, v)
    return v


@triton.jit
def _bf16_bits(v, NATIVE: tl.constexpr):
    if NATIVE:
        h = v.to(tl.bfloat16, fp_downcast_rounding="rtne").to(tl.uint16, bitcast=True).to(tl.uint32)
    else:
        x = _bits(v)
        nan = (x & 0x7fffffff) > 0x7f800000
        h = tl.where(nan, (x >> 16) | 0x40, (x + 0x7fff + ((x >> 16) & 1)) >> 16)
    return h


@triton.jit
def _fp16_bits(v, NATIVE: tl.constexpr):
    if NATIVE:
        h = v.to(tl.float16, fp_downcast_rounding="rtne").to(tl.uint16, bitcast=True).to(tl.uint32)
    else:
        x = _bits(v)
        sign = (x >> 16) & 0x8000
        a = x & 0x7fffffff
        r = a - 0x38000000
        normal = sign | ((r + 0x0fff + ((r >> 13) & 1)) >> 13)
        # subnormal half: shift the 24-bit significand right, round to nearest even
        m = (a & 0x7fffff) | 0x800000
        shift = tl.minimum(126 - (a >> 23), 31)
        shift = tl.maximum(shift, 1)
        q = m >> shift
        rem = m & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        up = (rem > half) | ((rem == half) & ((q & 1) == 1))
        sub = sign | (q + up.to(tl.uint32))
        h = tl.where(a >= 0x38800000, normal, sub)
        h = tl.where(a < 0x33000000, sign, h)
        h = tl.where(a >= 0x477ff000, sign | 0x7c00, h)
        h = tl.where(a > 0x7f800000, sign | 0x7e00, h)
    return h


@triton.jit
def _next_down(bits, sign_bit):
    magnitude = bits & (sign_bit - 1)
    down = tl.where((bits & sign_bit) != 0, bits + 1, bits - 1)
    return tl.where(magnitude == 0, sign_bit | 1, down)


@triton.jit
def _bf16_to_f32(h):
    return _f32(h << 16)


@triton.jit
def _fp16_to_f32(h):
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1f
    m = h & 0x3ff
    inf_nan = _f32(sign | 0x7f800000 | (m << 13))
    normal = _f32(sign | ((e + 112) << 23) | (m << 13))
    sub = _f32(sign | _bits(m.to(tl.float32) * 5.9604644775390625e-08))
    return tl.where(e == 0x1f, inf_nan, tl.where(e != 0, normal, sub))


@triton.jit
def _element_size(STORE: tl.constexpr) -> tl.constexpr:
    if STORE == _F32:
        return tl.constexpr(4)
    elif STORE == _F64:
        return tl.constexpr(8)
    else:
        return tl.constexpr(2)


@triton.jit
def _placed(i, offset, run, run_stride):
    """Logical index of element i (rng_math.h placed_index)."""
    safe_run = tl.where(run == 0, 1, run)
    return tl.where(run == 0, offset + i, offset + (i // safe_run) * run_stride + i % safe_run)


@triton.jit
def _element_offsets(meta_row, idx, ndim, STRIDED: tl.constexpr):
    """Logical (row-major) index -> element offset from the tensor's start."""
    if STRIDED:
        off = tl.zeros(idx.shape, tl.int64)
        rem = idx
        for d in tl.static_range(_MAX_DIMS - 1, -1, -1):
            size = tl.load(meta_row + _COL_SIZES + d)
            stride = tl.load(meta_row + _COL_SIZES + _MAX_DIMS + d)
            use = d < ndim
            size = tl.where(use, size, 1)
            off += tl.where(use, (rem % size) * stride, 0)
            rem = rem // size
        return off
    else:
        return idx


@triton.jit(do_not_specialize=KEY_ARGS)
def init_kernel(base, meta, params, table, num_tensors,
                key0, key1, key2, key3, key4, key5, key6, key7, key8, key9,
                key10, key11, key12, key13, key14, key15, key16, key17, key18, key19,
                STORE: tl.constexpr, STRIDED: tl.constexpr, ALIGNED: tl.constexpr,
                NATIVE: tl.constexpr, UNIT: tl.constexpr, BLOCK: tl.constexpr,
                SEARCH_STEPS: tl.constexpr, ONLY_KIND: tl.constexpr,
                INDEX_ALIGNED: tl.constexpr = True, HAS_RUNS: tl.constexpr = False):
    # The Philox round keys (launch.round_keys), int32 arguments holding uint32 words.
    keys = (key0.to(tl.uint32, bitcast=True), key1.to(tl.uint32, bitcast=True),
            key2.to(tl.uint32, bitcast=True), key3.to(tl.uint32, bitcast=True),
            key4.to(tl.uint32, bitcast=True), key5.to(tl.uint32, bitcast=True),
            key6.to(tl.uint32, bitcast=True), key7.to(tl.uint32, bitcast=True),
            key8.to(tl.uint32, bitcast=True), key9.to(tl.uint32, bitcast=True),
            key10.to(tl.uint32, bitcast=True), key11.to(tl.uint32, bitcast=True),
            key12.to(tl.uint32, bitcast=True), key13.to(tl.uint32, bitcast=True),
            key14.to(tl.uint32, bitcast=True), key15.to(tl.uint32, bitcast=True),
            key16.to(tl.uint32, bitcast=True), key17.to(tl.uint32, bitcast=True),
            key18.to(tl.uint32, bitcast=True), key19.to(tl.uint32, bitcast=True))
    pid = tl.program_id(0)
    # The tensor of this block: the last one whose first block is <= pid (int32: block numbers
    # and tensor counts are below 2^31).
    lo = pid * 0
    hi = lo + num_tensors - 1
    for _ in tl.static_range(SEARCH_STEPS):
        mid = (lo + hi + 1) >> 1
        go_up = tl.load(meta + mid * _META_COLS + _COL_FIRST_BLOCK).to(tl.int32) <= pid
        lo = tl.where(go_up, mid, lo)
        hi = tl.where(go_up, hi, mid - 1)
    row_meta = meta + lo * _META_COLS
    numel = tl.load(row_meta + _COL_NUMEL)
    begin = (pid.to(tl.int64) - tl.load(row_meta + _COL_FIRST_BLOCK)) * BLOCK
    stream = tl.load(row_meta + _COL_STREAM)
    stream_lo = stream.to(tl.uint32)
    stream_hi = (stream >> 32).to(tl.uint32)
    if ONLY_KIND >= 0:
        kind = ONLY_KIND
    else:
        kind = tl.load(row_meta + _COL_KIND)
    # Its logical index: placed by (offset, run, run_stride) in a larger logical tensor.
    index_offset = tl.load(row_meta + _COL_INDEX_OFFSET)
    if INDEX_ALIGNED and not HAS_RUNS:
        # Row r's groups are gbase + r * UNIT / 4 + h. While a block's groups share one high
        # word (all but blocks that cross a multiple of 2^32 groups), that word is a scalar
        # like the stream words, and Philox work on scalars is done once for all groups. Two
        # copies of the rest, each ending in its stores (a branch that yields no tensor).
        gbase = (begin + index_offset) >> 2  # both >= 0
        if STRIDED:  # one copy: two of its per-dimension addressing would not fit registers
            _fill(base, meta, row_meta, params, table, keys, lo, begin, numel, stream_lo,
                  stream_hi, gbase, kind, STORE, STRIDED, ALIGNED, NATIVE, UNIT, BLOCK,
                  INDEX_ALIGNED, HAS_RUNS, False)
        elif (gbase & 0xFFFFFFFF) <= 0x100000000 - BLOCK // 4:
            _fill(base, meta, row_meta, params, table, keys, lo, begin, numel, stream_lo,
                  stream_hi, gbase, kind, STORE, STRIDED, ALIGNED, NATIVE, UNIT, BLOCK,
                  INDEX_ALIGNED, HAS_RUNS, True)
        else:
            _fill(base, meta, row_meta, params, table, keys, lo, begin, numel, stream_lo,
                  stream_hi, gbase, kind, STORE, STRIDED, ALIGNED, NATIVE, UNIT, BLOCK,
                  INDEX_ALIGNED, HAS_RUNS, False)
    else:
        _fill(base, meta, row_meta, params, table, keys, lo, begin, numel, stream_lo,
              stream_hi, index_offset, kind, STORE, STRIDED, ALIGNED, NATIVE, UNIT, BLOCK,
              INDEX_ALIGNED, HAS_RUNS, False)


@triton.jit
def _fill(base, meta, row_meta, params, table, keys, lo, begin, numel, stream_lo, stream_hi,
          gbase, kind, STORE: tl.constexpr, STRIDED: tl.constexpr, ALIGNED: tl.constexpr,
          NATIVE: tl.constexpr, UNIT: tl.constexpr, BLOCK: tl.constexpr,
          INDEX_ALIGNED: tl.constexpr, HAS_RUNS: tl.constexpr, CARRY_FREE: tl.constexpr):
    """Words, values and stores of a block (init_kernel's body). gbase: the block's first Philox
    group where INDEX_ALIGNED and not HAS_RUNS, else the tensor's index offset; CARRY_FREE: the
    block's groups have gbase's high word."""
    p = params + lo * 6
    p0 = tl.load(p + 0)
    p1 = tl.load(p + 1)
    # BLOCK elements as ROWS x UNIT: a thread holds whole rows (16-byte stores); a row is
    # UNIT // 4 Philox groups.
    ROWS: tl.constexpr = BLOCK // UNIT
    rows = tl.arange(0, ROWS)
    lane = tl.arange(0, UNIT)[None, :]
    row_first = rows[:, None] * UNIT                     # index in the block of a row's lane 0

    if kind == 3:
        v = _f32(tl.zeros((ROWS, UNIT), tl.uint32) | _bits(p0))  # exact, -0.0 included
    else:
        w = tl.zeros((ROWS, UNIT), tl.uint32)
        if not INDEX_ALIGNED:
            index_offset = gbase
            run = tl.load(row_meta + _COL_RUN)
            run_stride = tl.load(row_meta + _COL_RUN_STRIDE)
            # A placement not in whole units: a row may span Philox groups; each element computes
            # its own group's words and keeps its lane (correct, four times the Philox work).
            idx = begin + row_first + lane
            if HAS_RUNS:
                gidx = _placed(idx, index_offset, run, run_stride)
            else:
                gidx = idx + index_offset
            lane2 = gidx % 4
            x0, x1, x2, x3 = _group_words(gidx // 4, stream_lo, stream_hi, keys)
            w = tl.where(lane2 == 0, x0, tl.where(lane2 == 1, x1, tl.where(lane2 == 2, x2, x3)))
        elif HAS_RUNS:
            index_offset = gbase
            run = tl.load(row_meta + _COL_RUN)
            run_stride = tl.load(row_meta + _COL_RUN_STRIDE)
            group0 = _placed(begin + rows * UNIT, index_offset, run, run_stride) // 4
            for h in tl.static_range(UNIT // 4):
                x0, x1, x2, x3 = _group_words(group0 + h, stream_lo, stream_hi, keys)
                w = _set_lanes(w, lane, 4 * h, x0, x1, x2, x3)
        else:
            first = (rows * (UNIT // 4)).to(tl.uint32)
            for h in tl.static_range(UNIT // 4):
                if CARRY_FREE:
                    x0, x1, x2, x3 = _philox(gbase.to(tl.uint32) + first + h,
                                             (gbase >> 32).to(tl.uint32), stream_lo, stream_hi,
                                             keys)
                else:
                    x0, x1, x2, x3 = _group_words(gbase + rows * (UNIT // 4) + h, stream_lo,
                                                  stream_hi, keys)
                w = _set_lanes(w, lane, 4 * h, x0, x1, x2, x3)
        if kind == 0:
            v = _normal(w, p0, p1, table, NATIVE)
        elif kind == 1:
            v = _uniform(w, p0, p1, NATIVE)
        else:
            v = _trunc_normal(w, p0, p1, tl.load(p + 2), tl.load(p + 3), tl.load(p + 4),
                              tl.load(p + 5), table, NATIVE)

    # Rounding to the destination; uniform keeps b excluded after rounding (when a < b).
    finish = (kind == 1) & (p0 < p1)
    if STORE == _BF16:
        h16 = _bf16_bits(v, NATIVE)
        if finish:
            h16 = tl.where(_bf16_to_f32(h16) >= p1, _next_down(h16, 0x8000), h16)
    elif STORE == _F16:
        h16 = _fp16_bits(v, NATIVE)
        if finish:
            h16 = tl.where(_fp16_to_f32(h16) >= p1, _next_down(h16, 0x8000), h16)
    else:
        if finish:
            v = tl.where(v >= p1, _f32(_next_down(_bits(v), 0x80000000)), v)

    if STORE == _F32:
        out = v
    elif STORE == _F64:
        out = v.to(tl.float64)
    elif STORE == _BF16:
        out = h16.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        out = h16.to(tl.uint16).to(tl.float16, bitcast=True)
    # The padding row is zero: only blocks that overlap it compare indices (in the block,
    # int32: the bounds clamped to it). Index row_first + lane is compared as row_first against
    # bound - lane: per-element indices exist in no path that does not need them. Strided
    # blocks compare int64 tensor indices: with the int32 form ptxas gives their kernel 32
    # registers and 4 KB of stack.
    pad_begin = tl.load(row_meta + _COL_PAD_BEGIN) - begin
    pad_end = tl.load(row_meta + _COL_PAD_END) - begin
    if (pad_begin < BLOCK) & (pad_end > 0):
        if STRIDED:
            idx = begin + row_first + lane
            pad = (idx >= pad_begin + begin) & (idx < pad_end + begin)
        else:
            pad_lo = tl.maximum(pad_begin, 0).to(tl.int32)
            pad_hi = tl.minimum(pad_end, BLOCK).to(tl.int32)
            pad = (row_first >= pad_lo - lane) & (row_first < pad_hi - lane)
        out = tl.where(pad, tl.zeros_like(out), out)

    start = tl.load(row_meta + _COL_OFFSET)
    if ALIGNED:
        # Aligned tensors start 16 bytes apart from the base: a multiple of 16 bytes, not of
        # 16 elements.
        start = tl.multiple_of(start, 16 // _element_size(STORE))
    if STRIDED:
        ptrs = base + start + _element_offsets(row_meta, begin + row_first + lane,
                                               tl.load(row_meta + _COL_NDIM), STRIDED)
    else:
        ptrs = (base + (start + begin)) + (row_first + lane)  # int32 offsets in the block
    if begin + BLOCK <= numel:
        tl.store(ptrs, out)
    else:
        # A tensor's last block: whole rows with a row mask (still 16-byte stores), then the
        # partial row element-wise.
        if STRIDED:
            idx = begin + row_first + lane
            tl.store(ptrs, out, mask=begin + row_first + UNIT <= numel)
            tl.store(ptrs, out, mask=(idx < numel) & (begin + row_first + UNIT > numel))
        else:
            left = (numel - begin).to(tl.int32)
            tl.store(ptrs, out, mask=row_first <= left - UNIT)
            tl.store(ptrs, out, mask=(row_first < left - lane) & (row_first > left - UNIT))
