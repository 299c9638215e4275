"""Worker bodies for test_strided_shard.py (gloo, CPU, a 2x2 "dp" x "tp" mesh): DTensors with
_StridedShard placements - FSDP2 over tensor parallelism, torchtitan's 2-D layout - written in
place by fusedinit equal the single-process values bit for bit."""
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard, distribute_tensor, init_device_mesh
from torch.distributed.tensor.placement_types import _StridedShard

import fusedinit
from fusedinit.ops import sharding

sys.path.insert(0, os.path.dirname(__file__))
from distributed_workers import NoCollectives, _bits  # noqa: E402

SPECS = [fusedinit.Normal(0.1, 1.5, stream=5), fusedinit.Uniform(-1, 2, stream=6),
         fusedinit.TruncNormal(0, 1, -1.5, 0.5, stream=7),
         fusedinit.Normal(0, 0.02, padding_idx=5, stream=8)]


def _expect_equal(dt: DTensor, spec, seed: int, what: str) -> None:
    full = dt.full_tensor()  # communication only to check the result
    expected = fusedinit.init_many_([(torch.empty(dt.shape, dtype=dt.dtype), spec)], seed=seed)[0]
    if not torch.equal(_bits(full.contiguous()), _bits(expected)):
        bad = int((_bits(full.contiguous()) != _bits(expected)).sum())
        raise AssertionError(f"rank {dist.get_rank()}: {what}: {bad} elements differ")


def _check_indices(dt: DTensor, what: str) -> None:
    """sharding.global_indices (computed locally) against torch's own placement of the values:
    a DTensor holding each element's global flat index."""
    numbered = distribute_tensor(torch.arange(dt.numel(), dtype=torch.float64).view(dt.shape),
                                 dt.device_mesh, dt.placements).to_local()
    idx = sharding.global_indices(dt)
    strides = [1] * dt.dim()
    for d in range(dt.dim() - 2, -1, -1):
        strides[d] = strides[d + 1] * dt.shape[d + 1]
    expected = torch.zeros((), dtype=torch.float64)
    for d in range(dt.dim()):
        axis = torch.tensor(list(idx[d]), dtype=torch.float64) * strides[d]
        expected = expected.unsqueeze(-1) + axis
    if not torch.equal(expected.reshape(numbered.shape), numbered):
        raise AssertionError(f"rank {dist.get_rank()}: {what}: global indices differ")


def strided_dtensors():
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    layouts = [[_StridedShard(0, split_factor=2), Shard(0)],
               [_StridedShard(1, split_factor=2), Shard(1)],
               [Shard(1), Shard(0)],
               [_StridedShard(0, split_factor=2), Shard(1)]]
    shapes = [(16, 12), (38, 22), (13, 9, 6), (8, 12, 4)]  # even, uneven, 3-D
    tested = 0
    for shape in shapes:
        for placements in layouts:
            try:
                dt = distribute_tensor(torch.zeros(shape), mesh, placements)
            except Exception as exc:  # a layout torch itself cannot build for this shape
                if dist.get_rank() == 0:
                    print(f"skipped {shape} {placements}: {exc}")
                continue
            what = f"{shape} {placements}"
            _check_indices(dt, what)
            tested += 1
            for seed, spec in enumerate(SPECS):
                for dtype in (torch.float32, torch.bfloat16):
                    t = distribute_tensor(torch.zeros(shape, dtype=dtype), mesh, placements)
                    with NoCollectives():
                        fusedinit.init_many_([(t, spec)], seed=seed)
                    _expect_equal(t, spec, seed, f"{what} {spec} {dtype}")
    if tested < len(shapes) * 2:
        raise AssertionError(f"only {tested} layouts could be built; the test checks too little")
    if dist.get_rank() == 0:
        print(f"{tested} layouts checked")


class Stack(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(20, 38)
        self.down = torch.nn.Linear(38, 20)
        self.out = torch.nn.Linear(20, 12, bias=False)


def fsdp_over_tp():
    """parallelize_module on "tp" (colwise / rowwise), then fully_shard on "dp": the colwise
    weights and biases become _StridedShard on "dp"."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel,
                                                   parallelize_module)

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    with torch.device("meta"):
        model = Stack()
    parallelize_module(model, mesh["tp"], {"up": ColwiseParallel(), "down": RowwiseParallel(),
                                           "out": ColwiseParallel()})
    fully_shard(model, mesh=mesh["dp"])
    model.to_empty(device="cpu")
    params = dict(model.named_parameters())
    strided = [n for n, p in params.items()
               if any(isinstance(pl, _StridedShard) for pl in p.placements)]
    if "up.weight" not in strided:
        raise AssertionError(f"expected _StridedShard placements, got "
                             f"{ {n: p.placements for n, p in params.items()} }")
    specs = {n: SPECS[i % len(SPECS)] for i, n in enumerate(params)}
    with NoCollectives():
        fusedinit.init_many_([(p, specs[n]) for n, p in params.items()], seed=1234)
    for n, p in params.items():
        _expect_equal(p.data, specs[n], 1234, f"{n} {p.placements}")

