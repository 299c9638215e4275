"""FSDP2 over tensor parallelism (torchtitan's 2-D layout): DTensors with _StridedShard
placements are initialized shard by shard, equal to the unsharded tensor bit for bit, with no
collective (4 gloo processes on CPU, a 2x2 mesh)."""
import os
import sys

import pytest
import torch

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is needed", allow_module_level=True)
pytest.importorskip("torch.distributed.tensor.placement_types")

sys.path.insert(0, os.path.dirname(__file__))
from gloo_spawn import spawn as _spawn  # noqa: E402


def spawn(case, world, tmp_path):
    _spawn("distributed_strided_workers", case, world, tmp_path)


def test_strided_shard_dtensors_equal_the_unsharded_tensor(tmp_path):
    spawn("strided_dtensors", 4, tmp_path)


def test_fsdp2_over_tensor_parallel_linear_stack(tmp_path):
    spawn("fsdp_over_tp", 4, tmp_path)
