"""Sharded init on torch.distributed (gloo, CPU, 2-4 processes): DTensor shards and FSDP2
models initialized in place hold, gathered, the pure-PyTorch reference's values of each
unsharded tensor bit for bit (its spec stated by the test), with no collective."""
import os
import sys

import pytest
import torch

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is needed", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
from gloo_spawn import spawn as _spawn  # noqa: E402


def spawn(case, world, tmp_path):
    _spawn("distributed_workers", case, world, tmp_path)


def test_no_collectives_guard_catches_every_kind_of_collective(tmp_path):
    spawn("guard_catches_collectives", 2, tmp_path)


@pytest.mark.parametrize("world", [2, 3, 4])
def test_dtensor_shards_equal_the_unsharded_tensor(world, tmp_path):
    spawn("dtensor_cases", world, tmp_path)


@pytest.mark.parametrize("world", [2, 3])
def test_fsdp2_init_module(world, tmp_path):
    spawn("fsdp2_init_module", world, tmp_path)


@pytest.mark.parametrize("world", [2, 3])
def test_fsdp2_transformers_from_config(world, tmp_path):
    pytest.importorskip("transformers")
    spawn("fsdp2_llama_from_config", world, tmp_path)


@pytest.mark.parametrize("world", [2])
def test_fsdp2_user_wrapped_transformers_model(world, tmp_path):
    pytest.importorskip("transformers")
    spawn("fsdp2_llama_user_wrapped", world, tmp_path)
