"""Run a test case on several gloo processes (CPU): one spawn-and-watch helper and one worker
entry point for every distributed test file. A case is a function of a worker module, called
with no arguments (or with the text after ':' in its name) on every rank."""
from __future__ import annotations

import importlib
import os
import sys
import time

import pytest
import torch
import torch.distributed as dist


def _worker(rank: int, world: int, init_file: str, module: str, case: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(__file__))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        name, _, argument = case.partition(":")
        function = getattr(importlib.import_module(module), name)
        function(argument) if argument else function()
        dist.barrier()
    except BaseException:
        import traceback
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    # Every rank is done (barrier): leave without running gloo's destructors, whose thread
    # teardown intermittently aborts the process ("terminate called without an active
    # exception") on torch 2.13 after a clean run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(module: str, case: str, world: int, tmp_path, time_limit_s: float = 240) -> None:
    """Run `module.case()` on `world` gloo processes; fail (and kill them) when one fails or
    after `time_limit_s`."""
    context = torch.multiprocessing.start_processes(
        _worker, args=(world, str(tmp_path / "rendezvous"), module, case),
        nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + time_limit_s
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{case} on {world} processes ran past {time_limit_s} s")
