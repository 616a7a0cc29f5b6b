"""Tiny random Hugging Face models, built by transformers itself, for parity tests."""

from __future__ import annotations

import torch
import transformers

COMMON = dict(vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, max_position_embeddings=256, rms_norm_eps=1e-6)
MOE = dict(num_experts_per_tok=2)

# model type -> (config class, model class, config overrides)
TINY = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(sliding_window=None)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM, dict(num_local_experts=4, **MOE)),
    "qwen2_moe": (transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM,
                  dict(num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                       norm_topk_prob=False, **MOE)),
    "qwen2_moe_no_shared": (transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM,
                            dict(num_experts=4, moe_intermediate_size=32, shared_expert_intermediate_size=0,
                                 norm_topk_prob=True, **MOE)),
}


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a random value (experts, routers and norms included), so that no
    parity can hold by accident: experts all differ, routers are not zero, norms are not ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.08
            p.copy_(1.0 + noise if "norm" in name else noise)
    return model


def tiny_hf_model(kind: str, seed: int = 0, **overrides):
    """A tiny random transformers model of `kind` (a key of TINY), in eval mode, fp32."""
    config_cls, model_cls, extra = TINY[kind]
    config = config_cls(**{**COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    model = model_cls(config)
    return randomize_(model, seed).eval()
