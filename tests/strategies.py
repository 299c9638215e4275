"""Hypothesis strategies and the reference helper shared by the backend-vs-reference tests."""
import math

import torch
from hypothesis import strategies as st

import fusedinit
from conftest import DTYPES

U64 = st.integers(0, 2**64 - 1)
SPEC = st.one_of(
    st.builds(fusedinit.Normal, st.floats(-3, 3), st.floats(0, 5), stream=U64),
    st.builds(fusedinit.Uniform, st.floats(-4, -0.5), st.floats(-0.4, 6), stream=U64),
    st.builds(fusedinit.TruncNormal, st.floats(-1, 1), st.floats(0.01, 3), st.floats(-3, -1.01),
              st.floats(1.01, 3), stream=U64),
    st.builds(fusedinit.Constant, st.floats(-10, 10)),
)

# Uniform endpoints near the float32 range, tiny and huge std (float16 subnormals and
# overflow), zero std, a narrow uniform, both extreme tails of the truncated normal.
EXTREME_SPECS = [fusedinit.Uniform(-1.5e38, 1.5e38), fusedinit.Normal(0, 1e-30),
                 fusedinit.Normal(0, 1e5), fusedinit.Normal(2, 0), fusedinit.Uniform(1, 1 + 2**-20),
                 fusedinit.TruncNormal(0, 1, 4.5, 5.5), fusedinit.TruncNormal(0, 1, -5.5, -4.5)]


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
def views(draw, max_side=70, dtypes=DTYPES):
    """A tensor of random shape (0-4 dims), possibly a non-contiguous view of a larger one."""
    ndim = draw(st.integers(0, 4))
    shape = draw(st.lists(st.integers(0, 9) if ndim > 2 else st.integers(0, max_side),
                          min_size=ndim, max_size=ndim))
    dtype = draw(st.sampled_from(dtypes))
    kind = draw(st.sampled_from(["contiguous", "transpose", "step", "offset"]))
    if kind == "transpose" and ndim >= 2:
        base = torch.empty(*shape[:-2], shape[-1], shape[-2], dtype=dtype)
        return base.transpose(-1, -2)
    if kind == "step" and ndim >= 1:
        base = torch.empty(*shape[:-1], shape[-1] * 2 + 1, dtype=dtype)
        return base[..., ::2][..., : shape[-1]]
    if kind == "offset":
        n = math.prod(shape)
        return torch.empty(n + 3, dtype=dtype)[3:].view(shape)
    return torch.empty(shape, dtype=dtype)
