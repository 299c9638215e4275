"""Named model configs for `python -m fusedinit init-model`: ~1B-parameter stand-ins for the
families users initialize at scale."""
from __future__ import annotations


def preset(name: str):
    import transformers as tf

    if name == "llama-1b":  # ~0.84B parameters (hidden 2048, 16 layers, intermediate 5632)
        return tf.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                              num_attention_heads=32, num_key_value_heads=4, vocab_size=32000,
                              max_position_embeddings=2048)
    if name == "deepseek-v3-1b":  # ~1.1B parameters (hidden 2048, 4 layers, 16 routed experts)
        return tf.DeepseekV3Config(
            hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
            num_hidden_layers=4, first_k_dense_replace=1, n_routed_experts=16,
            num_experts_per_tok=4, n_shared_experts=1, n_group=4, topk_group=2,
            num_attention_heads=16, num_key_value_heads=16, q_lora_rank=1536, kv_lora_rank=512,
            qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, vocab_size=129280,
            max_position_embeddings=4096)
    raise KeyError(name)


PRESETS = ("llama-1b", "deepseek-v3-1b")


def load_config(spec: str):
    """A preset name, a config.json path, or a directory holding one."""
    import os

    from transformers import AutoConfig

    if spec in PRESETS:
        return preset(spec)
    if os.path.isdir(spec):
        return AutoConfig.from_pretrained(spec)
    if os.path.isfile(spec):
        import json

        with open(spec) as f:
            data = json.load(f)
        model_type = data.pop("model_type", None)
        if model_type is None:
            raise ValueError(f"{spec}: config.json without a model_type")
        return AutoConfig.for_model(model_type, **data)
    raise ValueError(f"{spec!r} is neither a preset ({', '.join(PRESETS)}) nor a config path")
