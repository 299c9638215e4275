"""Megatron-Core with fusedinit: build a GPTModel as Megatron users do (any TP / PP / EP, dense
or MoE), with no parameter allocated and no master weight drawn, then let every rank write its
own shards with Megatron's init rules - the gathered model is the same for every layout.

    torchrun --nproc-per-node 2 examples/megatron_init.py --tp 2                 # GPUs: NCCL
    torchrun --nproc-per-node 2 examples/megatron_init.py --tp 2 --device cpu    # CPU: gloo
    torchrun --nproc-per-node 2 examples/megatron_init.py --pp 2 --experts 4 --ep 1 --device cpu

Needs megatron-core (`pip install --no-deps "megatron-core==0.16.*"`). On the CPU the model is
built with `use_cpu_initialization=True` (Megatron's GPU initialization needs its CUDA RNG
tracker); on GPUs with Megatron's default, under its tracker.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

import fusedinit


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--ep", type=int, default=1)
    parser.add_argument("--experts", type=int, default=0, help="MoE experts (0: dense)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: pass --device cpu")

    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig

    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    ps.initialize_model_parallel(tensor_model_parallel_size=args.tp,
                                 pipeline_model_parallel_size=args.pp,
                                 expert_model_parallel_size=args.ep,
                                 expert_tensor_parallel_size=1 if args.ep > 1 else None)
    if args.device == "cuda":
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed
        model_parallel_cuda_manual_seed(args.seed)  # Megatron's own requirement for GPU init
    moe = dict(num_moe_experts=args.experts, moe_router_topk=2, add_bias_linear=False,
               expert_model_parallel_size=args.ep,
               expert_tensor_parallel_size=1 if args.ep > 1 else None) if args.experts else {}
    config = TransformerConfig(num_layers=args.layers, hidden_size=args.hidden,
                               num_attention_heads=8, init_method_std=0.02,
                               tensor_model_parallel_size=args.tp,
                               pipeline_model_parallel_size=args.pp,
                               pipeline_dtype=torch.float32,
                               use_cpu_initialization=args.device == "cpu", **moe)
    spec = get_gpt_layer_local_spec(num_experts=args.experts or None)

    t0 = time.perf_counter()
    # Megatron's constructor, parameters on meta: what its init methods write is recorded.
    model = fusedinit.deferred_init(GPTModel, config, spec, vocab_size=32000,
                                    max_sequence_length=2048,
                                    pre_process=ps.is_pipeline_first_stage(),
                                    post_process=ps.is_pipeline_last_stage())
    # This rank's shards, written at their global places (model.sharded_state_dict()).
    fusedinit.megatron.materialize_(model, device=args.device, seed=args.seed)
    seconds = time.perf_counter() - t0
    n = sum(p.numel() for p in model.parameters())
    print(f"rank {dist.get_rank()}: {n / 1e6:.1f}M parameters initialized on {args.device} in "
          f"{seconds:.2f} s (TP={args.tp} PP={args.pp} EP={args.ep})")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
