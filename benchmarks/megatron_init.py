"""Megatron-Core GPTModel on gloo ranks (CPU, float32): time to an initialized model and peak RSS
per rank, Megatron's own CPU initialization (`use_cpu_initialization=True`: every rank draws the
full master weight of each layer with torch's generator, then keeps its slice) vs fusedinit
(`fusedinit.deferred_init` + `fusedinit.megatron.materialize_`: each rank writes its shards).
Each mode runs in fresh processes, one per rank, one thread each.

    python benchmarks/megatron_init.py                    # ~0.95B dense GPT, TP=2 on 2 ranks
    python benchmarks/megatron_init.py --model moe        # a 0.37B MoE (8 experts), EP=2
    python benchmarks/megatron_init.py --model tiny       # seconds: a smoke run

Needs megatron-core (`pip install --no-deps "megatron-core==0.16.*"`)."""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings

import torch
import torch.distributed as dist

MODELS = {
    # hidden 2048, 16 layers, vocab 32000: 0.95B parameters
    "dense": dict(num_layers=16, hidden_size=2048, ffn_hidden_size=8192,
                  num_attention_heads=16, vocab=32000, seq=2048),
    "moe": dict(num_layers=8, hidden_size=1024, ffn_hidden_size=4096, num_attention_heads=16,
                vocab=32000, seq=2048, num_moe_experts=8, moe_ffn_hidden_size=2048,
                moe_router_topk=2, add_bias_linear=False),
    "tiny": dict(num_layers=2, hidden_size=64, ffn_hidden_size=256, num_attention_heads=4,
                 vocab=512, seq=64),
}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rank(rank: int, world: int, init_file: str, out: str, mode: str, model: str, tp: int,
          ep: int, seed: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    import fusedinit
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig

    ps.initialize_model_parallel(tensor_model_parallel_size=tp, expert_model_parallel_size=ep,
                                 expert_tensor_parallel_size=1 if ep > 1 else None)
    shape = dict(MODELS[model])
    vocab, seq = shape.pop("vocab"), shape.pop("seq")
    experts = shape.get("num_moe_experts")
    config = TransformerConfig(**shape, use_cpu_initialization=True, init_method_std=0.02,
                               tensor_model_parallel_size=tp, expert_model_parallel_size=ep,
                               expert_tensor_parallel_size=1 if ep > 1 else None)
    spec = get_gpt_layer_local_spec(num_experts=experts)
    dist.barrier()
    rss0 = _peak_rss_bytes()
    t0 = time.perf_counter()
    if mode == "megatron":
        torch.manual_seed(seed)
        gpt = GPTModel(config, spec, vocab_size=vocab, max_sequence_length=seq)
    else:
        gpt = fusedinit.deferred_init(GPTModel, config, spec, vocab_size=vocab,
                                      max_sequence_length=seq)
        fusedinit.megatron.materialize_(gpt, device="cpu", seed=seed)
    seconds = time.perf_counter() - t0
    grown = _peak_rss_bytes() - rss0
    shard_bytes = sum(p.numel() * p.element_size() for p in gpt.parameters())
    params = sum(p.numel() for p in gpt.parameters())
    with open(os.path.join(out, f"{mode}-{rank}.json"), "w") as f:
        json.dump(dict(rank=rank, seconds=seconds, rss_growth=grown, shard_bytes=shard_bytes,
                       params=params), f)
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # (gloo's teardown is slow and, on some torch versions, noisy)


def run(mode: str, model: str, tp: int, ep: int, seed: int) -> list:
    world = max(tp, ep)
    with tempfile.TemporaryDirectory() as out:
        torch.multiprocessing.start_processes(
            _rank, args=(world, os.path.join(out, "rendezvous"), out, mode, model, tp, ep, seed),
            nprocs=world, join=True, start_method="spawn")
        return [json.load(open(os.path.join(out, f"{mode}-{r}.json"))) for r in range(world)]


def _slowest(ranks: list) -> float:
    return max(r["seconds"] for r in ranks)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="dense")
    parser.add_argument("--tp", type=int, default=None, help="default: 2 (dense), 1 (moe)")
    parser.add_argument("--ep", type=int, default=None, help="default: 1 (dense), 2 (moe)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--modes", default="megatron,fusedinit")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per mode (fresh processes each); the median run is shown")
    args = parser.parse_args(argv)
    moe = "num_moe_experts" in MODELS[args.model]
    tp = args.tp if args.tp is not None else (1 if moe else 2)
    ep = args.ep if args.ep is not None else (2 if moe else 1)
    if tp < 1 or ep < 1:
        parser.error("--tp and --ep must be at least 1")
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in ("megatron", "fusedinit") for m in modes):
        parser.error("--modes takes megatron and/or fusedinit, comma-separated")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    runs = {m: [] for m in modes}
    for _ in range(args.repeat):  # alternating, so drifts of the machine hit both modes
        for m in modes:
            runs[m].append(run(m, args.model, tp, ep, args.seed))
    # the run with the median time (slowest rank) of each mode; its ranks' numbers
    results = {m: sorted(rs, key=_slowest)[len(rs) // 2] for m, rs in runs.items()}
    print(f"Megatron-Core GPTModel '{args.model}', TP={tp} EP={ep} on {max(tp, ep)} gloo ranks, "
          f"CPU, float32, one thread per rank; median of {args.repeat} runs per mode "
          "(all times: " + "; ".join(f"{m} " + ", ".join(f"{_slowest(r):.2f}" for r in rs)
                                      for m, rs in runs.items()) + " s)")
    print("| mode | parameters per rank | time (slowest rank) | peak RSS growth per rank | "
          "shard bytes per rank | RSS / shards |")
    print("|---|---|---|---|---|---|")
    for mode, ranks in results.items():
        worst = max(ranks, key=lambda r: r["rss_growth"] / r["shard_bytes"])
        print(f"| {mode} | {ranks[0]['params'] / 1e6:.0f}M | "
              f"{_slowest(ranks):.2f} s | "
              f"{worst['rss_growth'] / 2**30:.2f} GiB | {worst['shard_bytes'] / 2**30:.2f} GiB | "
              f"{worst['rss_growth'] / worst['shard_bytes']:.3f} |")
    if len(results) == 2:
        slow, fast = _slowest(results["megatron"]), _slowest(results["fusedinit"])
        print(f"fusedinit is {slow / fast:.1f}x faster (median runs)")


if __name__ == "__main__":
    main()
