"""config.json <-> ModelConfig for the Hugging Face model types the lab reads and writes.

Both transformers 4.x and 5.x field names are read (`rope_theta` or `rope_parameters`, `torch_dtype`
or `dtype`), and both are written, so that either version opens what the lab saves.

Which type the lab writes follows from the config, never from a name:
- dense: `qwen2` when q/k/v have a bias (Aquila's layout), `llama` otherwise (`mistral` with a
  sliding window);
- MoE: `mixtral` when every layer is MoE, without q/k/v bias or shared expert, with Mixtral's routing;
  `qwen2_moe` otherwise (it always carries q/k/v biases and a shared expert, written as zeros or
  as empty tensors when the model has none, which changes nothing in the function).
"""

from __future__ import annotations

from typing import Any

from lab.config import ROPE_SCALINGS, ModelConfig
from lab.errors import CheckpointError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "mixtral", "qwen2_moe")
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
}
# transformers' defaults for fields a config.json may leave out.
_DEFAULT_ROPE_THETA = {"llama": 10000.0, "mistral": 10000.0, "qwen2": 10000.0, "mixtral": 1e6, "qwen2_moe": 10000.0}
_DEFAULT_NORM_EPS = {"llama": 1e-6, "mistral": 1e-6, "qwen2": 1e-6, "mixtral": 1e-5, "qwen2_moe": 1e-6}
# Fields carried through unchanged (token ids matter to tokenizers and generate()).
_PASSTHROUGH = ("bos_token_id", "eos_token_id", "pad_token_id")


def _rope(d: dict, model_type: str, source: str) -> tuple[float, dict | None]:
    """(theta, scaling) from transformers 5.x `rope_parameters` or 4.x `rope_theta` + `rope_scaling`."""
    params = dict(d.get("rope_parameters") or {})
    scaling = dict(d.get("rope_scaling") or {})
    merged = {**scaling, **params}
    rope_type = merged.pop("rope_type", None) or merged.pop("type", None) or "default"
    theta = float(merged.pop("rope_theta", d.get("rope_theta") or _DEFAULT_ROPE_THETA[model_type]))
    if rope_type == "default":
        return theta, None
    if rope_type not in ROPE_SCALINGS:
        raise CheckpointError(f"{source}: RoPE type {rope_type!r} is not supported "
                              f"(supported: default, {', '.join(ROPE_SCALINGS)})")
    return theta, {"rope_type": rope_type, **{k: merged[k] for k in ROPE_SCALINGS[rope_type] if k in merged}}


def config_from_hf(d: dict[str, Any], source: str) -> tuple[ModelConfig, str]:
    """Read a config.json dict; returns the lab's config and the Hugging Face model type.

    `source` names the file in error messages.
    """
    model_type = d.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"{source}: unsupported model_type {model_type!r} "
                              f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")

    def need(key: str) -> Any:
        if d.get(key) is None:
            raise CheckpointError(f"{source}: missing field {key!r} (required for model_type {model_type!r})")
        return d[key]

    if d.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{source}: hidden_act {d['hidden_act']!r} is not supported (SwiGLU needs 'silu')")
    if model_type == "llama" and (d.get("attention_bias") or d.get("mlp_bias")):
        raise CheckpointError(f"{source}: llama with attention_bias/mlp_bias is not supported "
                              "(the lab's decoder has biases on q/k/v only)")
    if model_type in ("qwen2", "qwen2_moe") and d.get("use_sliding_window"):
        raise CheckpointError(f"{source}: use_sliding_window=true is not supported for {model_type}")

    n_heads = need("num_attention_heads")
    rope_theta, rope_scaling = _rope(d, model_type, source)
    fields: dict[str, Any] = dict(
        vocab_size=need("vocab_size"),
        dim=need("hidden_size"),
        n_layers=need("num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=d.get("num_key_value_heads") or n_heads,
        head_dim=d.get("head_dim") or None,
        ffn_dim=need("intermediate_size"),
        qkv_bias=model_type == "qwen2" or (model_type == "qwen2_moe" and d.get("qkv_bias", True)),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        norm_eps=float(d.get("rms_norm_eps") or _DEFAULT_NORM_EPS[model_type]),
        max_seq_len=d.get("max_position_embeddings") or 2048,
        tie_embeddings=bool(d.get("tie_word_embeddings", False)),
        sliding_window=d.get("sliding_window") if model_type in ("mistral", "mixtral") else None,
        dtype=str(d.get("dtype") or d.get("torch_dtype") or "float32"),
        extra={k: d[k] for k in _PASSTHROUGH if k in d},
    )
    if model_type == "mixtral":
        fields.update(n_experts=need("num_local_experts"), top_k=need("num_experts_per_tok"),
                      routing="topk_softmax", moe_ffn_dim=fields["ffn_dim"])
    elif model_type == "qwen2_moe":
        n_layers, step = fields["n_layers"], d.get("decoder_sparse_step") or 1
        dense_layers = set(d.get("mlp_only_layers") or ())
        fields.update(
            n_experts=need("num_experts"), top_k=need("num_experts_per_tok"),
            routing="topk_softmax" if d.get("norm_topk_prob", False) else "softmax_topk",
            moe_ffn_dim=need("moe_intermediate_size"),
            shared_expert_ffn_dim=d.get("shared_expert_intermediate_size") or 0,
            moe_layers=tuple(i for i in range(n_layers) if i not in dense_layers and (i + 1) % step == 0),
        )
    if fields.get("n_experts"):
        fields["aux_loss_coef"] = float(d.get("router_aux_loss_coef", 0.001))
        fields["z_loss_coef"] = float(d.get("router_z_loss_coef", 0.01))
        # A lab-only key: absent in every checkpoint written before it existed, which averaged.
        fields["router_loss_aggregation"] = d.get("router_loss_aggregation", "mean")
    try:
        return ModelConfig(**fields), model_type
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None


def hf_model_type(cfg: ModelConfig) -> str:
    """The Hugging Face model type the lab writes for this config (see the module docstring)."""
    if not cfg.is_moe:
        model_type = "qwen2" if cfg.qkv_bias else ("mistral" if cfg.sliding_window else "llama")
    else:
        mixtral_fits = (cfg.n_moe_layers == cfg.n_layers and not cfg.qkv_bias
                        and cfg.shared_expert_ffn_dim == 0 and cfg.routing == "topk_softmax")
        model_type = "mixtral" if mixtral_fits else "qwen2_moe"
    if cfg.sliding_window and model_type not in ("mistral", "mixtral"):
        raise CheckpointError(f"a model with sliding_window={cfg.sliding_window} cannot be saved as "
                              f"{model_type} (only mistral and mixtral express a sliding window)")
    return model_type


def config_to_hf(cfg: ModelConfig, model_type: str) -> dict[str, Any]:
    """The config.json dict of `cfg` saved as `model_type` (as returned by `hf_model_type`)."""
    d: dict[str, Any] = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,  # transformers 4.x
        "rope_scaling": cfg.rope_scaling,  # transformers 4.x
        "rope_parameters": {"rope_type": "default", **(cfg.rope_scaling or {}), "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": cfg.dtype,  # transformers 4.x
        "dtype": cfg.dtype,  # transformers 5.x
    }
    if model_type == "llama":
        d.update(attention_bias=False, mlp_bias=False)
    if model_type in ("qwen2", "qwen2_moe"):
        d.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layers)
    if model_type == "mistral":
        d.update(sliding_window=cfg.sliding_window)
    if model_type == "mixtral":
        d.update(num_local_experts=cfg.n_experts, num_experts_per_tok=cfg.top_k,
                 intermediate_size=cfg.moe_ffn_dim, sliding_window=cfg.sliding_window,
                 router_jitter_noise=0.0, output_router_logits=False)
    if model_type == "qwen2_moe":
        d.update(num_experts=cfg.n_experts, num_experts_per_tok=cfg.top_k,
                 norm_topk_prob=cfg.routing == "topk_softmax", moe_intermediate_size=cfg.moe_ffn_dim,
                 shared_expert_intermediate_size=cfg.shared_expert_ffn_dim, decoder_sparse_step=1,
                 mlp_only_layers=[i for i in range(cfg.n_layers) if not cfg.is_moe_layer(i)],
                 qkv_bias=True, output_router_logits=False)
    if cfg.is_moe:
        # router_aux_loss_coef is transformers' own key; the other two are the lab's, kept by transformers
        # as plain attributes of the config.
        d.update(router_aux_loss_coef=cfg.aux_loss_coef, router_z_loss_coef=cfg.z_loss_coef,
                 router_loss_aggregation=cfg.router_loss_aggregation)
    d.update({k: v for k, v in cfg.extra.items() if k in _PASSTHROUGH})
    return d
