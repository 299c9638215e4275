"""Megatron-Core (tests/megatron_workers.py, gloo on the CPU): the global tensors gathered from
the ranks' shards through Megatron's own `sharded_state_dict()` are bit for bit the same for
every tensor- / pipeline- / expert-parallel layout, follow Megatron's init rules, and are the
contract's values for the key; Megatron's own init is layout-dependent (the reason for all
this). Skipped without megatron-core."""
from __future__ import annotations

import functools
import math
import os
import pathlib
import sys

import pytest
import torch

pytest.importorskip("megatron.core", reason="megatron-core is not installed")

import fusedinit  # noqa: E402
from fusedinit.models.streams import param_stream  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from gloo_spawn import spawn  # noqa: E402

SEED = 1234


def gather(folder: pathlib.Path, how: str, model: str, tp: int, pp: int, ep: int,
           *overrides: str) -> dict:
    """The global tensors of `model` initialized `how` under TP=tp, PP=pp, EP=ep, one gloo
    process per rank (its files in `folder`, made here)."""
    world = pp * max(tp, ep)  # experts: expert-TP 1, EP ranks taken from TP x DP
    folder.mkdir(parents=True)
    path = folder / "global.pt"
    argument = ",".join([how, model, str(tp), str(pp), str(ep), str(path), *overrides])
    spawn("megatron_workers", f"save_case:{argument}", world, folder, time_limit_s=300)
    return torch.load(path)


@functools.lru_cache(maxsize=None)
def _cached(how: str, model: str, tp: int, pp: int, ep: int, root: str) -> dict:
    folder = pathlib.Path(root)
    if (tp, pp, ep) == (1, 1, 1):  # all one-rank models come from one process
        if not (folder / "fused-dense.pt").exists():
            spawn("megatron_workers", f"singles_case:{folder}", 1, folder, time_limit_s=300)
        return torch.load(folder / f"{how}-{model}.pt")
    return gather(folder / f"{how}-{model}-{tp}{pp}{ep}", how, model, tp, pp, ep)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("megatron"))


def assert_same(a: dict, b: dict, what: str) -> None:
    assert sorted(a) == sorted(b), f"{what}: different keys"
    for key in a:
        assert a[key].shape == b[key].shape, f"{what}: {key} shapes differ"
        assert torch.equal(a[key].view(torch.int32), b[key].view(torch.int32)), \
            f"{what}: {key} differs"


LAYOUTS = {
    "dense": [(2, 1, 1), (1, 2, 1), (2, 2, 1)],
    "moe": [(1, 1, 2), (2, 1, 1), (2, 1, 2), (1, 2, 2)],
    "grouped": [(1, 1, 2), (2, 1, 1)],
}


@pytest.mark.parametrize("model,layout", [(m, l) for m, ls in LAYOUTS.items() for l in ls],
                         ids=lambda x: x if isinstance(x, str) else "tp%d-pp%d-ep%d" % x)
def test_layouts_give_the_same_global_tensors(model, layout, cache_root):
    single = _cached("fused", model, 1, 1, 1, cache_root)
    sharded = _cached("fused", model, *layout, cache_root)
    assert_same(single, sharded, f"{model} {layout}")


def test_grouped_experts_equal_sequential_experts(cache_root):
    """Megatron saves GroupedMLP's weights (one tensor, transposed) under SequentialMLP's keys
    and layout: the same model either way, so the same weights."""
    assert_same(_cached("fused", "moe", 1, 1, 1, cache_root),
                _cached("fused", "grouped", 1, 1, 1, cache_root), "grouped vs sequential")


def _expected_std(key: str) -> float:
    """Megatron's rule: init_method_normal(0.02); the layers that write into the residual
    stream (linear_proj, linear_fc2) get scaled_init_method_normal: 0.02 / sqrt(2 * layers)."""
    scaled = key.endswith("linear_proj.weight") or key.endswith("linear_fc2.weight")
    return 0.02 / math.sqrt(2 * 4) if scaled else 0.02


@pytest.mark.parametrize("model", ["dense", "moe"])
def test_values_follow_megatrons_rules(model, cache_root):
    ours = _cached("fused", model, 1, 1, 1, cache_root)
    theirs = _cached("megatron", model, 1, 1, 1, cache_root)
    assert sorted(ours) == sorted(theirs)
    drawn = 0
    for key, mine in ours.items():
        stock = theirs[key]
        if bool((stock == stock.reshape(-1)[0]).all()):  # norms one, biases zero
            assert torch.equal(mine, stock), key
            continue
        drawn += 1
        std, n = _expected_std(key), stock.numel()
        se_std, se_mean = std / math.sqrt(2 * n), std / math.sqrt(n)
        for name, t in (("megatron", stock), ("fusedinit", mine)):
            assert abs(float(t.std()) - std) < 6 * se_std, (name, key, float(t.std()), std)
            assert abs(float(t.mean())) < 6 * se_mean, (name, key, float(t.mean()))
        expected = fusedinit.normal_(torch.empty(mine.shape), 0.0, std, seed=SEED,
                                     stream=param_stream(key), backend="reference")
        assert torch.equal(mine, expected), key
    assert drawn == (7 if model == "dense" else 8)  # embeddings, attention, MLP / router + experts, output


def test_custom_init_methods_are_fused_and_layout_free(tmp_path):
    """config.init_method = torch.nn.init.xavier_uniform_ and a trunc_normal_ output layer
    init: recorded on the full master weight (CPU initialization), the same for TP = 1 and 2,
    and the contract's Uniform / TruncNormal on each key's stream."""
    one = gather(tmp_path / "tp1", "fused", "dense", 1, 1, 1, "init=xavier")
    two = gather(tmp_path / "tp2", "fused", "dense", 2, 1, 1, "init=xavier")
    assert_same(one, two, "xavier TP 1 vs 2")
    qkv = one["decoder.layers.self_attention.linear_qkv.weight"]  # [layers, 3 * 64, 64]
    bound = math.sqrt(6.0 / (qkv.shape[1] + qkv.shape[2]))
    expected = fusedinit.uniform_(torch.empty(qkv.shape), -bound, bound, seed=SEED,
                                  stream=param_stream("decoder.layers.self_attention.linear_qkv"
                                                      ".weight"), backend="reference")
    assert torch.equal(qkv, expected)
    proj = one["decoder.layers.self_attention.linear_proj.weight"]
    expected = fusedinit.trunc_normal_(torch.empty(proj.shape), 0.0, 0.01, -0.02, 0.02,
                                       seed=SEED, backend="reference",
                                       stream=param_stream("decoder.layers.self_attention."
                                                           "linear_proj.weight"))
    assert torch.equal(proj, expected)


def test_gpu_initialization_path_is_layout_free(tmp_path):
    """Megatron's default initialization draws each rank's local shard (init_method on the
    shard under the CUDA RNG tracker); recorded per shard, written at the global places: TP=2
    gives the TP=1 model (on this CPU, with the CUDA device and tracker stood in for)."""
    one = gather(tmp_path / "tp1", "fused", "dense", 1, 1, 1, "gpu_init=True")
    two = gather(tmp_path / "tp2", "fused", "dense", 2, 1, 1, "gpu_init=True")
    assert_same(one, two, "GPU init path TP 1 vs 2")


@pytest.mark.parametrize("case", ["op_calls_case:grouped,2,1,1", "op_calls_case:dense,1,2,1"])
def test_one_op_call_per_rank(case, tmp_path):
    model, tp, pp, ep = case.split(":")[1].split(",")
    spawn("megatron_workers", case, int(pp) * max(int(tp), int(ep)), tmp_path)


def test_single_rank_checks(tmp_path):
    """Parameters keep Megatron's attributes; no master weight allocated (a 32 GiB one
    recorded); perform_initialization=False named,
    then written through init=; what cannot be placed named (megatron_workers.py)."""
    spawn("megatron_workers", "single_rank_checks_case", 1, tmp_path)


def test_layout_dependent_rules_and_seeds_are_refused(tmp_path):
    """xavier under Megatron's GPU initialization at TP=2, xavier in GroupedMLP: named; a
    seed left to torch's generator on 2 ranks: refused (megatron_workers.py)."""
    spawn("megatron_workers", "two_rank_refusals_case", 2, tmp_path)
