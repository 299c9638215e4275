"""Tiny configs of the model families the transformers tests cover (the same classes exist in
transformers 4.57 and 5.x)."""
import transformers as tf

COMMON = dict(vocab_size=512, pad_token_id=1)


def families():
    """name -> (config, model class)."""
    return {
        "llama": (tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, **COMMON),
                  tf.LlamaForCausalLM),
        "gemma": (tf.GemmaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                 **COMMON), tf.GemmaForCausalLM),
        "gpt2": (tf.GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=128, vocab_size=512),
                 tf.GPT2LMHeadModel),
        "t5": (tf.T5Config(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_heads=4, **COMMON),
               tf.T5ForConditionalGeneration),
        "bert": (tf.BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=128, **COMMON),
                 tf.BertForMaskedLM),
        "vit": (tf.ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, image_size=32, patch_size=8), tf.ViTModel),
        "deepseek_v3": (tf.DeepseekV3Config(
            hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=3,
            first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
            n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1,
            q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
            v_head_dim=16, **COMMON), tf.DeepseekV3ForCausalLM),
    }
