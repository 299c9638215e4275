"""Fake (meta) kernels of the fusedinit ops, so they trace under torch.compile. The C++
library names this module (m.set_python_module), and fusedinit.ops.op imports it right after
loading the library."""
from __future__ import annotations

import torch


@torch.library.register_fake("fusedinit::init_")
def _init_fake(tensors, kinds, params, streams, padding_rows, seed, index_map=None):
    return None


@torch.library.register_fake("fusedinit_testing::emulate_cuda_init_")
def _emulate_fake(tensors, kinds, params, streams, padding_rows, seed, grid, block,
                  index_map=None):
    return None


@torch.library.register_fake("fusedinit_testing::philox4x32_10")
def _philox_fake(counters, keys):
    return counters.new_empty(counters.shape)


@torch.library.register_fake("fusedinit_testing::transform_words")
def _transform_fake(words, kind, params):
    return words.new_empty(words.shape, dtype=torch.float32)
