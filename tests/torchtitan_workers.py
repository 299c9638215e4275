"""torchtitan helpers for the client tests, and the distributed worker: each rank builds the
`debugmodel` on meta, parallelizes it with torchtitan's own `parallelize_*` (FSDP2, or FSDP2 x
TP on a 2-D mesh, gloo on CPU), `to_empty`, then `fusedinit.fuse` + `init_weights()` with no
collective, and compares every gathered parameter with the single-process model."""
import functools
import os
import sys

import pytest
import torch
import torch.distributed as dist
from torch import nn

# torchtitan's fused wqkv init (q, k, v drawn into temporaries, concatenated, copy_'d into the
# parameter) is folded by the engine into the parameter's own write: no mark needed any more.
WQKV = ()
FAMILY_MODULES = {"llama3": "torchtitan.models.llama3",
                  "deepseek_v3": "torchtitan.models.deepseek_v3"}


def require_torchtitan():
    """Skip the calling test module unless torchtitan and the modules its model code imports
    are installed."""
    for module in FAMILY_MODULES.values():
        pytest.importorskip(module, reason="torchtitan (and its model-code imports) not installed")


def _family(name):
    import importlib

    return importlib.import_module(FAMILY_MODULES[name])


def config(family, flavor="debugmodel"):
    """The model config exactly as torchtitan's registry ships it."""
    return _family(family).model_registry(flavor).model


def build(family, flavor="debugmodel", cfg=None):
    with torch.device("meta"):
        return (cfg or config(family, flavor)).build()


def _spec_of(fn):
    """The fusedinit spec a torchtitan param_init callable asks for, or None for skip."""
    from torchtitan.models.common.param_init import skip_param_init

    from fusedinit import Constant, Normal, TruncNormal

    if fn is skip_param_init:
        return None
    if fn is nn.init.ones_:
        return Constant(1.0)
    if fn is nn.init.zeros_:
        return Constant(0.0)
    if isinstance(fn, functools.partial) and not fn.args:
        kw = fn.keywords
        if fn.func is nn.init.trunc_normal_:
            return TruncNormal(kw.get("mean", 0.0), kw.get("std", 1.0), kw.get("a", -2.0),
                               kw.get("b", 2.0))
        if fn.func is nn.init.normal_:
            return Normal(kw.get("mean", 0.0), kw.get("std", 1.0))
    # torchtitan's fused wqkv init: q, k, v drawn with the base rule, then laid out as wqkv -
    # i.i.d. values of the base rule, permuted.
    if getattr(fn, "__qualname__", "").startswith("_fused_qkv_param_init."):
        cells = dict(zip(fn.__code__.co_freevars, fn.__closure__))
        return _spec_of(cells["base_init"].cell_contents)
    raise AssertionError(f"unknown torchtitan param_init {fn!r}")


def rules(model):
    """name -> spec (None: skipped) from every module's own `_param_init`, named as the
    engine names tensors (first name of a tied tensor)."""
    by_id = {}
    for module in model.modules():
        table = getattr(module, "_param_init", None)
        for leaf, p in module.named_parameters(recurse=False):
            assert table is not None and leaf in table, f"{type(module).__name__}.{leaf}"
            spec = _spec_of(table[leaf])
            if spec is not None or id(p) not in by_id:
                by_id[id(p)] = spec
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


class CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts fusedinit op calls and draws from torch's own generator (ops that really run:
    entered outside fusedinit.fuse, it sees what the engine lets through)."""

    RANDOM = ("normal_", "uniform_", "bernoulli_", "random_", "exponential_", "erfinv_",
              "randn", "rand")

    def __init__(self):
        super().__init__()
        self.fused = 0
        self.torch_random = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fusedinit":
            self.fused += 1
        if func.__name__.split(".")[0] in self.RANDOM:
            self.torch_random += 1
        return func(*args, **(kwargs or {}))


def _torchtitan_buffer_redistribution() -> bool:
    """True inside torchtitan's own `init_states` re-distribution of recomputed DTensor buffers
    (`distribute_tensor` of its rotary table): client code that runs as written, not a write
    fusedinit makes."""
    import traceback

    frames = [(f.name, f.filename) for f in traceback.extract_stack()]
    return any(name == "distribute_tensor" for name, _ in frames) and any(
        name == "init_states" and "torchtitan" in filename for name, filename in frames)


class NoCollectives:
    """Any c10d collective inside raises - except torchtitan's own buffer re-distribution."""
    NAMES = ["all_reduce", "all_gather", "all_gather_into_tensor", "broadcast",
             "reduce_scatter_tensor", "scatter", "gather", "all_to_all_single", "send", "recv",
             "barrier", "reduce"]

    def __enter__(self):
        import torch.distributed.distributed_c10d as c10d

        self.saved = {n: getattr(c10d, n) for n in self.NAMES if hasattr(c10d, n)}
        self.allowed = 0

        def guard(name, original):
            def forbidden(*args, **kwargs):
                if _torchtitan_buffer_redistribution():
                    self.allowed += 1
                    return original(*args, **kwargs)
                raise AssertionError(f"collective {name} during initialization")
            return forbidden

        for n, f in self.saved.items():
            setattr(dist, n, guard(n, f))
            setattr(c10d, n, guard(n, f))
        return self

    def __exit__(self, *exc):
        import torch.distributed.distributed_c10d as c10d

        for n, f in self.saved.items():
            setattr(dist, n, f)
            setattr(c10d, n, f)


def parallelize(model, family, world, tp):
    """torchtitan's own parallelize function (FSDP2 over the remaining ranks, TP of degree
    `tp`), on CPU: torchtitan picks "cuda" when no accelerator is found, so its device type is
    set to cpu first."""
    import torchtitan.distributed.parallel_dims as parallel_dims_module
    from torchtitan.config import CompileConfig, ParallelismConfig, TrainingConfig
    from torchtitan.distributed import ParallelDims

    parallel_dims_module.device_type = "cpu"
    parallelism = ParallelismConfig(tensor_parallel_degree=tp, data_parallel_shard_degree=-1,
                                    spmd_backend="partial_dtensor")
    dims = ParallelDims.from_config(parallelism, world)
    dims.build_mesh()
    fn = _family(family).model_registry("debugmodel").parallelize_fn
    fn(model, parallel_dims=dims, training=TrainingConfig(), parallelism=parallelism,
       compile_config=CompileConfig(), ac_config=None, dump_folder=".")
    return model


def _sharded_config(family, tp):
    cfg = config(family)
    if tp > 1:
        if family == "llama3":
            from torchtitan.models.llama3.sharding import set_llama3_sharding_config
            set_llama3_sharding_config(cfg, enable_sp=True)
        else:
            from torchtitan.models.deepseek_v3.sharding import set_deepseek_v3_sharding_config
            set_deepseek_v3_sharding_config(cfg, enable_sp=True, enable_ep=False)
    return cfg


def compare_with_single_process(family, world, tp, seed=4321):
    import fusedinit

    model = parallelize(build(family, cfg=_sharded_config(family, tp)), family, world, tp)
    model.to_empty(device="cpu")
    with NoCollectives(), fusedinit.fuse(model, seed=seed):
        model.init_weights(buffer_device=torch.device("cpu"))
    reference = build(family)
    reference.to_empty(device="cpu")
    with fusedinit.fuse(reference, seed=seed):
        reference.init_weights(buffer_device=torch.device("cpu"))
    expected = dict(reference.named_parameters())
    bad = []
    for name, p in model.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p  # gather only to check
        if not torch.equal(full.detach().view(torch.int32), expected[name].detach().view(torch.int32)):
            bad.append(name)
    if bad:
        raise AssertionError(f"rank {dist.get_rank()} {family} world={world} tp={tp}: "
                             f"{len(bad)} parameters differ from one process: {bad[:4]}")


def compare_case(case: str) -> None:
    """case: "<family>:<tp degree>" - FSDP2 over world / tp ranks, TP of degree tp."""
    family, tp = case.split(":")
    compare_with_single_process(family, dist.get_world_size(), int(tp))
