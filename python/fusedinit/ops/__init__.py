"""Tensor level: the public tensor API (normal_, uniform_, trunc_normal_, init_many_), specs,
argument checks, seed resolution, shard placements and the wrapper of torch.ops.fusedinit
(with its fake kernels), plus the pure-PyTorch reference. Imports torch, the compiled _C and
fusedinit.triton only - never fusedinit.models, hf or cli; kernels never see module names."""
