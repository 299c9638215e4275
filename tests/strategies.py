"""Hypothesis strategies and the reference helper shared by the backend-vs-reference tests.

Draws are aimed at where kernels go wrong: most tensors cross a work chunk (1,024-element
blocks, the emulated CUDA launch's 8,192-element chunks, the CPU's 65,536-element chunks),
often by a few elements; layouts that really differ from contiguous (transposed,
channels_last, permuted, stepped, offset); Normals with a nonzero std and a padding row
anywhere in dim 0; uniform bounds that are equal, a few ulps apart, or exact 16-bit values
(where rounding to bfloat16 / float16 lands on b and the `>= b` rule must step down). Sizes
stay moderate (the pure-PyTorch reference does ~50k elements a second per core)."""
import math

import torch
from hypothesis import strategies as st

import fusedinit
from conftest import DTYPES

U64 = st.integers(0, 2**64 - 1)

BLOCK = 1024  # CPU kernel block
CHUNKS = (8192, 65536)  # emulated CUDA launch chunk, CPU work chunk
MAX_NUMEL = 200_000


def _f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def _f32_step(x: float, ulps: int) -> float:
    """x moved `ulps` float32 ulps up."""
    t = torch.tensor(x, dtype=torch.float32)
    for _ in range(ulps):
        t = torch.nextafter(t, torch.tensor(math.inf))
    return float(t)




def _rarely(value, otherwise, one_in: int):
    """`value` about once in `one_in` draws, else a draw of `otherwise`. (Hypothesis favours
    the low end of an integer range, so the rare case sits at the top.)"""
    return st.tuples(st.integers(0, one_in - 1), otherwise).map(
        lambda t: value if t[0] == one_in - 1 else t[1])


NORMAL = st.builds(fusedinit.Normal, st.floats(-3, 3), _rarely(0.0, st.floats(1e-3, 5.0), 12),
                   stream=U64)
# Exact in float32, bfloat16 and float16: k / 16 for |k| <= 256.
SIXTEEN_BIT_EXACT = st.integers(-256, 256).map(lambda k: k / 16)


@st.composite
def _uniform(draw):
    kind = draw(st.sampled_from(["wide", "16-bit b", "16-bit b", "few ulps", "equal"]))
    if kind == "wide":
        a, b = draw(st.floats(-4, -0.5)), draw(st.floats(-0.4, 6))
    elif kind == "16-bit b":
        # A range of 1 to 64 bfloat16 ulps below an exact 16-bit b: many values round to b.
        b = draw(SIXTEEN_BIT_EXACT)
        ulp = 2.0 ** (math.floor(math.log2(abs(b))) - 7) if b else 2.0**-20
        a = b - ulp * draw(st.integers(1, 64))
    elif kind == "few ulps":
        a = _f32(draw(st.floats(-100, 100)))
        b = _f32_step(a, draw(st.integers(1, 4)))
    else:
        a = b = draw(st.floats(-10, 10))
    return fusedinit.Uniform(a, b, stream=draw(U64))


TRUNC_NORMAL = st.builds(fusedinit.TruncNormal, st.floats(-1, 1), st.floats(0.01, 3),
                         st.floats(-3, -1.01) | st.just(-math.inf),
                         st.floats(1.01, 3) | st.just(math.inf), stream=U64)
SPEC = st.one_of(NORMAL, _uniform(), TRUNC_NORMAL, st.builds(fusedinit.Constant, st.floats(-10, 10)))

# Uniform endpoints near the float32 range, tiny and huge std (float16 subnormals and
# overflow), zero std, a narrow uniform, both extreme tails of the truncated normal.
EXTREME_SPECS = [fusedinit.Uniform(-1.5e38, 1.5e38), fusedinit.Normal(0, 1e-30),
                 fusedinit.Normal(0, 1e5), fusedinit.Normal(2, 0), fusedinit.Uniform(1, 1 + 2**-20),
                 fusedinit.TruncNormal(0, 1, 4.5, 5.5), fusedinit.TruncNormal(0, 1, -5.5, -4.5),
                 # open sides: a normal, a half-normal (mirrored), an open lower side, a far
                 # open tail, bounds beyond float32
                 fusedinit.TruncNormal(0, 1, -math.inf, math.inf),
                 fusedinit.TruncNormal(0.5, 2, 0.5, math.inf),
                 fusedinit.TruncNormal(0, 0.02, -math.inf, 0.01),
                 fusedinit.TruncNormal(-1, 1, 2, math.inf),
                 fusedinit.TruncNormal(0, 1, -1e39, 1e39)]


def raw_reference_of(tensor, spec, seed):
    """The reference's values without the API's checks: parameters whose values overflow the
    dtype are refused by the API, yet the kernels must still round them as torch does."""
    return fusedinit.reference.init_(torch.empty(tensor.shape, dtype=tensor.dtype),
                                     kind=spec.kind, params=spec.op_params, seed=seed,
                                     stream=spec.stream)


def reference_of(tensor, spec, seed):
    """What the reference writes into a tensor of this shape and dtype."""
    expected = torch.empty(tensor.shape, dtype=tensor.dtype)
    fusedinit.init_many_([(expected, spec)], seed=seed, backend="reference")
    return expected


@st.composite
def _numel(draw, max_numel):
    """A total size: a few small ones, most just around a chunk multiple or spread over
    [chunk, max_numel] on a log scale."""
    chunks = [c for c in (BLOCK,) + CHUNKS if c < max_numel][-2:]  # the largest two that fit
    pick = draw(st.integers(0, 19))  # 0 is drawn most often (see _rarely)
    kind = ("around a chunk" if pick < 8 else "log-spread" if pick < 15 else
            "small" if pick < 17 else "tiny")
    if kind == "tiny" or not chunks:
        return draw(st.integers(0, min(16, max_numel)))
    if kind == "small":
        return draw(st.integers(17, min(2000, max_numel)))
    if kind == "around a chunk":
        chunk = draw(st.sampled_from(chunks))
        k = draw(st.integers(1, max(1, min(4, max_numel // chunk - 1))))
        return min(max_numel, max(1, k * chunk + draw(st.integers(-40, 40))))
    return int(round(math.exp(draw(st.floats(math.log(BLOCK), math.log(max_numel))))))


def _split(draw, n, ndim):
    """A shape of `ndim` dims with a random split and product n or a little above (the last
    side drawn is rounded up, so a size just past a chunk stays past it)."""
    if ndim == 0:
        return []
    outer = []
    for d in range(ndim - 1):
        left = max(1, n // max(1, math.prod(outer)))
        outer.append(draw(st.integers(1, min(left, 64 if d else left))))
    shape = outer + [-(-n // math.prod(outer))]
    if math.prod(shape) > n + n // 8:  # a large outer side overshoots: keep n exact instead
        shape = [1] * (ndim - 1) + [n]
    if n == 0:
        shape[draw(st.integers(0, ndim - 1))] = 0
    return draw(st.permutations(shape))


@st.composite
def views(draw, max_side=None, dtypes=DTYPES, max_numel=MAX_NUMEL):
    """A tensor of random shape (0-4 dims) and size (see _numel), possibly a non-contiguous
    view of a larger one. max_side (for slow backends) caps the size at max_side**2."""
    if max_side is not None:
        max_numel = min(max_numel, max_side * max_side)
    n = draw(_numel(max_numel))
    if draw(st.integers(0, 24)) == 24:
        n = 1
        ndim = 0
    else:
        ndim = draw(st.integers(1, 4))
    shape = _split(draw, n, ndim)
    dtype = draw(st.sampled_from(dtypes))
    kinds = ["contiguous", "transpose", "step", "offset", "permuted"]
    kind = draw(st.sampled_from(kinds + (["channels_last"] if ndim == 4 else [])))
    if kind == "transpose" and ndim >= 2:
        base = torch.empty(*shape[:-2], shape[-1], shape[-2], dtype=dtype)
        return base.transpose(-1, -2)
    if kind == "permuted" and ndim >= 2:
        order = draw(st.permutations(range(ndim)))
        base = torch.empty([shape[i] for i in order], dtype=dtype)
        return base.permute([order.index(i) for i in range(ndim)])
    if kind == "channels_last":
        return torch.empty(shape, dtype=dtype).to(memory_format=torch.channels_last)
    if kind == "step" and ndim >= 1:
        dim = draw(st.integers(0, ndim - 1))
        step = draw(st.integers(2, 3))
        bigger = list(shape)
        bigger[dim] = shape[dim] * step + 1
        index = [slice(None)] * ndim
        index[dim] = slice(0, shape[dim] * step, step)
        return torch.empty(bigger, dtype=dtype)[tuple(index)]
    if kind == "offset":
        skip = draw(st.integers(1, 7))
        return torch.empty(math.prod(shape) + skip, dtype=dtype)[skip:].view(shape)
    return torch.empty(shape, dtype=dtype)


@st.composite
def view_and_spec(draw, max_side=None, dtypes=DTYPES, max_numel=MAX_NUMEL):
    """(tensor, spec): a view as above and a spec; for a tensor with rows, a Normal with a
    padding row (first, last, negative or in the middle) a quarter of the time."""
    tensor = draw(views(max_side=max_side, dtypes=dtypes, max_numel=max_numel))
    if tensor.dim() >= 1 and tensor.shape[0] >= 1 and draw(st.integers(0, 3)) == 3:
        rows = tensor.shape[0]
        pad = draw(st.one_of(st.just(0), st.just(rows - 1), st.integers(-rows, rows - 1)))
        normal = draw(NORMAL)
        return tensor, fusedinit.Normal(normal.mean, normal.std, padding_idx=pad,
                                        stream=normal.stream)
    return tensor, draw(SPEC)
