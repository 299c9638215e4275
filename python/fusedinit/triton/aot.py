"""Ahead-of-time compilation of the Triton kernel for a GPU architecture, without a GPU:
catches lowering errors in CI and gives the PTX / cubin the SASS report reads."""
from __future__ import annotations

import math

import torch

from . import kernel as K
from .launch import BLOCK, NUM_WARPS, _STORE

_PTR = {torch.float32: "*fp32", torch.float64: "*fp64", torch.bfloat16: "*bf16",
        torch.float16: "*fp16"}


def compile_kernel(dtype: torch.dtype = torch.float32, *, arch: int = 90, layout: str = "aligned",
                   only_kind: int = -1, num_tensors: int = 2, index_aligned: bool = True,
                   has_runs: bool = False):
    """triton.compile of init_kernel for `dtype` on sm_`arch` (the options a launch uses:
    no fp fusion, NATIVE=True). Returns the CompiledKernel (its .asm has 'ptx' and 'cubin')."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {"base": _PTR[dtype], "meta": "*i64", "params": "*fp32", "table": "*i64",
                 "num_tensors": "i32", **{name: "i32" for name in K.KEY_ARGS}}
    constexprs = {
        "STORE": _STORE[dtype], "STRIDED": layout == "strided", "ALIGNED": layout == "aligned",
        "NATIVE": True, "UNIT": 8 if dtype.itemsize == 2 else 4, "BLOCK": BLOCK,
        "SEARCH_STEPS": math.ceil(math.log2(num_tensors)) if num_tensors > 1 else 0,
        "ONLY_KIND": only_kind, "INDEX_ALIGNED": index_aligned, "HAS_RUNS": has_runs,
    }
    for name in constexprs:
        signature[name] = "constexpr"
    # Pointers 16-byte aligned, as the launcher's runtime specialization would find them.
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(4)}
    src = ASTSource(fn=K.init_kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": NUM_WARPS, "enable_fp_fusion": False})
