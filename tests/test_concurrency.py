"""The model layer under threads: recordings are per thread (and task), nothing process-wide is
swapped by from_config or a recording, and what is patched on purpose (patch_transformers) is
restored exactly."""
import threading

import pytest
import torch
from torch import nn

import fusedinit
from conftest import assert_bitwise_equal
from fusedinit.models.engine import current_session, recording

tf = pytest.importorskip("transformers")
from hf_configs import families  # noqa: E402

REGISTER_PARAMETER = nn.Module.register_parameter
TORCH_INIT = {name: getattr(nn.init, name) for name in ("trunc_normal_", "normal_", "uniform_")}
PRETRAINED = {name: tf.PreTrainedModel.__dict__[name]
              for name in ("__init__", "post_init", "initialize_weights")}


def _torch_init_tables():
    """The attributes transformers' `guard_torch_init_functions` swaps during every init pass."""
    import sys

    try:
        from transformers.initialization import TORCH_INIT_FUNCTIONS, TORCH_MODULES_TO_PATCH
    except ImportError:  # transformers 4.x: no guard
        return {}
    return {(name, fn): getattr(sys.modules[name], fn) for name in TORCH_MODULES_TO_PATCH
            if name in sys.modules for fn in TORCH_INIT_FUNCTIONS
            if hasattr(sys.modules[name], fn)}


@pytest.fixture(autouse=True)
def restore_transformers_guard():
    """transformers' own init pass swaps torch.nn.init's functions (guard_torch_init_functions)
    and restores what it saved - which, with two passes interleaved in two threads, can be the
    other pass's wrappers: a transformers race, not fusedinit's (fusedinit swaps nothing), but
    it would leave torch.nn.init rebound for every later test in this process (torchtitan's
    param_init identity checks then fail). Restore the tables after each test here."""
    import sys

    saved = _torch_init_tables()
    yield
    for (name, fn), original in saved.items():
        setattr(sys.modules[name], fn, original)


def run_threads(targets, timeout=120):
    errors = []

    def guard(fn):
        def body():
            try:
                fn()
            except BaseException as exc:  # reported in the main thread
                errors.append(exc)
        return body

    threads = [threading.Thread(target=guard(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_a_recording_is_invisible_to_other_threads():
    inside, checked = threading.Event(), threading.Event()
    seen = []

    def recorder():
        with recording(nn.Linear(2, 2), seed=1):
            inside.set()
            checked.wait(30)

    def observer():
        inside.wait(30)
        seen.append(current_session())
        checked.set()

    run_threads([recorder, observer])
    assert seen == [None]
    assert current_session() is None


def test_two_threads_each_in_its_own_fuse():
    """Blocks that overlap in time give each module exactly what it gets alone."""
    barrier = threading.Barrier(2)
    models = {name: nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8)) for name in "ab"}

    def body(name):
        def run():
            model = models[name]
            with fusedinit.fuse(model, seed=7):
                nn.init.trunc_normal_(model[0].weight, std=0.02)
                barrier.wait(30)
                nn.init.normal_(model[1].weight, std=0.5)
                nn.init.zeros_(model[0].bias)
                barrier.wait(30)
        return run

    run_threads([body("a"), body("b")])
    alone = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8))
    with fusedinit.fuse(alone, seed=7):
        nn.init.trunc_normal_(alone[0].weight, std=0.02)
        nn.init.normal_(alone[1].weight, std=0.5)
        nn.init.zeros_(alone[0].bias)
    for name in "ab":
        for k, v in models[name].state_dict().items():
            if k != "1.bias":
                assert_bitwise_equal(v, alone.state_dict()[k], f"{name} {k}")


def test_concurrent_builds_patch_nothing():
    """from_config and the patched stock path in several threads while other threads build plain
    modules: every model is what it is when built alone, plain modules are real and initialized
    by torch, and afterwards nothing is left patched. Twenty rounds."""
    config, cls = families()["llama"]
    reference = fusedinit.from_config(config, model_class=cls, seed=3).state_dict()
    with fusedinit.patched_transformers(seed=3):
        stock_reference = cls(config).state_dict()
    for _ in range(20):
        built, plain = [], []

        def build_fused():
            built.append(fusedinit.from_config(config, model_class=cls, seed=3))

        def build_patched():
            with fusedinit.patched_transformers(seed=3):
                built.append(cls(config))

        def build_plain():
            for _ in range(20):
                plain.append(nn.Linear(64, 64))

        run_threads([build_fused, build_patched, build_fused, build_plain])
        for model in built:
            for k, v in model.state_dict().items():
                assert_bitwise_equal(v, reference[k], k)
        for layer in plain:
            assert layer.weight.device.type == "cpu"
            w = layer.weight.detach()
            assert float(w.abs().max()) > 0 and torch.isfinite(w).all()
        assert nn.Module.register_parameter is REGISTER_PARAMETER
        for name, fn in TORCH_INIT.items():
            assert "fusedinit" not in getattr(getattr(nn.init, name), "__module__", ""), name
        assert not fusedinit.hf.is_patched()
        for name, fn in PRETRAINED.items():
            assert tf.PreTrainedModel.__dict__[name] is fn, name
        assert current_session() is None
    for k, v in stock_reference.items():
        assert_bitwise_equal(v, reference[k], k)
    assert nn.Linear(4, 4).weight.device.type == "cpu"
