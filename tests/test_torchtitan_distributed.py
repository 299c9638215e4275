"""torchtitan's debugmodels sharded by torchtitan's own parallelize functions on gloo (CPU):
FSDP2 on 1, 2 and 4 ranks and FSDP2 x TP (TP degree 2) on 2 and 4 ranks, initialized with
`fusedinit.fuse` + `init_weights()` and no collective, equal the single-process model bit for
bit - no seed checkpoint."""
import os
import sys

import pytest
import torch

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is needed", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import torchtitan_workers as tw  # noqa: E402

tw.require_torchtitan()

from gloo_spawn import spawn as _spawn  # noqa: E402


def spawn(case, world, tmp_path):
    """case: "<family>:<tp degree>" - FSDP2 over world / tp ranks, TP of degree tp."""
    _spawn("torchtitan_workers", f"compare_case:{case}", world, tmp_path, time_limit_s=300)


WQKV = tw.WQKV

CASES = [("deepseek_v3", 1), ("deepseek_v3", 2), ("deepseek_v3", 4),
         pytest.param("llama3", 4, marks=WQKV)]


@pytest.mark.parametrize("family,world", CASES)
def test_fsdp2_equals_single_process(family, world, tmp_path):
    spawn(f"{family}:1", world, tmp_path)


@pytest.mark.parametrize("family,world", [("deepseek_v3", 2), ("deepseek_v3", 4),
                                          pytest.param("llama3", 4, marks=WQKV)])
def test_fsdp2_x_tp_equals_single_process(family, world, tmp_path):
    spawn(f"{family}:2", world, tmp_path)
