"""Issue 9, item 12: switching the CPU kernel variant while other threads initialize. set_isa
swaps one atomic pointer, so a call racing with a switch uses one whole variant's table, never a
half-copied one; every variant gives the same bits, so every result equals the reference."""
import threading

import pytest
import torch

import fusedinit
import fusedinit.testing
from conftest import assert_bitwise_equal, isas

SPECS = [fusedinit.Normal(0.0, 0.5), fusedinit.Uniform(-1.0, 2.0, stream=3),
         fusedinit.TruncNormal(0.1, 1.0, -1.5, 2.0, stream=7)]


def test_switching_the_variant_while_others_initialize(cpu_isa):
    names = isas()
    if len(names) < 2:
        pytest.skip("this CPU runs only one kernel variant")
    shapes = [(257,), (64, 33), (3, 5, 7), (1000,)]
    items = [(torch.empty(shape), SPECS[k % 3]) for k, shape in enumerate(shapes)]
    expected = fusedinit.init_many_([(torch.empty_like(t), s) for t, s in items], seed=21,
                                    backend="reference")
    stop = threading.Event()
    failures = []

    def switch():
        k = 0
        while not stop.is_set():
            cpu_isa(names[k % len(names)])
            k += 1

    def fill():
        try:
            for _ in range(60):
                mine = [(torch.empty_like(t), s) for t, s in items]
                for t, want in zip(fusedinit.init_many_(mine, seed=21, backend="cpu"),
                                   expected):
                    assert_bitwise_equal(t, want, f"variant switched mid-call, {tuple(t.shape)}")
        except Exception as exc:  # noqa: BLE001  (any failure, reported from the main thread)
            failures.append(exc)

    switchers = [threading.Thread(target=switch) for _ in range(2)]
    fillers = [threading.Thread(target=fill) for _ in range(3)]
    for thread in switchers + fillers:
        thread.start()
    for thread in fillers:
        thread.join()
    stop.set()
    for thread in switchers:
        thread.join()
    assert not failures, failures[0]
