"""config.json <-> ModelConfig for the Hugging Face model types the lab reads and writes.

Both transformers 4.x and 5.x field names are read (`rope_theta` or `rope_parameters`, `torch_dtype`
or `dtype`), and both are written, so that either version opens what the lab saves.

Which type the lab writes follows from the config, never from a name:
- dense: `qwen2` when q/k/v have a bias (Aquila's layout), `llama` otherwise (`mistral` with a
  sliding window);
- MoE: `mixtral` when every layer is MoE, without q/k/v bias or shared expert, with Mixtral's routing;
  `qwen2_moe` otherwise (it always carries q/k/v biases and a shared expert: a model without them gets
  zeros there, which changes nothing in the function; a missing shared expert is written as one unit of
  zeros, never as empty tensors, and config.json's lab-only `SHARED_EXPERT_PLACEHOLDER` key says so,
  so that the lab reads the model back without one).
"""

from __future__ import annotations

import math
from typing import Any

from lab.config import ROPE_SCALINGS, ModelConfig
from lab.errors import CheckpointError, quoted
from lab.msg_masks import MSG_MASKS  # a lab-only key too: a model on its masked-growth ramp (lab.msg_masks)

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
# A lab-only key (transformers keeps it as a plain attribute of the config), kept in ModelConfig.extra: the
# decoder layers depth growth inserted (`lab.growth.depth.inserted_copies`), written by `lab.derive`'s growth
# and carried through training, so that `train.trainable: new-blocks` (LLaMA-Pro) knows which blocks to train.
INSERTED_LAYERS = "inserted_layers"
# qwen2_moe always builds a shared expert; for a model without one the lab writes a one-unit shared expert of
# zeros (sigmoid(0) x down(silu(0) x 0) = 0 exactly) rather than zero-size tensors, which some loaders refuse,
# and marks it with this key so that reading it back gives a model without a shared expert again.
SHARED_EXPERT_PLACEHOLDER = "shared_expert_is_placeholder"
PLACEHOLDER_SHARED_EXPERT_SIZE = 1


class _Fields:
    """Typed reads of a config.json dict: a wrong type names the file and the key, and quotes the value short."""

    def __init__(self, d: dict[str, Any], source: str):
        self.d, self.source = d, source

    def fail(self, key: str, rule: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: {key} {rule}, got {quoted(self.d.get(key))}")

    def get(self, key: str, kind: str, default: Any = None, d: dict | None = None) -> Any:
        """d[key] checked as `kind` ("int", "number", "bool", "str", "ints", "mapping"); `default` when absent or null."""
        d = self.d if d is None else d
        value = d.get(key)
        if value is None:
            return default
        ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and math.isfinite(v)),
              "bool": lambda v: isinstance(v, bool),
              "str": lambda v: isinstance(v, str),
              "ints": lambda v: isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v),
              "mapping": lambda v: isinstance(v, dict)}[kind](value)
        if not ok:
            words = {"int": "an integer", "number": "a finite number", "bool": "true or false", "str": "a string",
                     "ints": "a list of integers", "mapping": "a mapping"}[kind]
            raise CheckpointError(f"{self.source}: {key} must be {words}, got {quoted(value)}")
        return value

    def need(self, key: str, kind: str, model_type: str) -> Any:
        value = self.get(key, kind)
        if value is None:
            raise CheckpointError(f"{self.source}: missing field {key!r} (required for model_type {model_type!r})")
        return value


def _rope(f: _Fields, model_type: str) -> tuple[float, dict | None]:
    """(theta, scaling) from transformers 5.x `rope_parameters` or 4.x `rope_theta` + `rope_scaling`."""
    params = dict(f.get("rope_parameters", "mapping", {}))
    scaling = dict(f.get("rope_scaling", "mapping", {}))
    merged = {**scaling, **params}
    where = "rope_parameters" if params else "rope_scaling"
    rope_type = merged.pop("rope_type", None) or merged.pop("type", None) or "default"
    top_level = f.get("rope_theta", "number", _DEFAULT_ROPE_THETA[model_type])  # checked even when shadowed
    theta = f.get("rope_theta", "number", None, merged) if "rope_theta" in merged else None
    theta = float(top_level if theta is None else theta)
    if rope_type == "default":
        return theta, None
    if rope_type not in ROPE_SCALINGS:
        raise CheckpointError(f"{f.source}: RoPE type {quoted(rope_type)} is not supported "
                              f"(supported: default, {', '.join(ROPE_SCALINGS)})")
    values = {k: f.get(k, "number", None, merged) for k in ROPE_SCALINGS[rope_type] if k in merged}
    for k, v in values.items():
        if v is None or v <= 0:
            raise CheckpointError(f"{f.source}: {where}.{k} must be a positive number, got {quoted(v)}")
    return theta, {"rope_type": rope_type, **values}


def config_from_hf(d: dict[str, Any], source: str) -> tuple[ModelConfig, str]:
    """Read a config.json dict; returns the lab's config and the Hugging Face model type.

    Every field is read with its type checked (`_Fields`): a malformed file is a CheckpointError naming
    `source` and the key, never a TypeError further on.
    """
    f = _Fields(d, source)
    model_type = d.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"{source}: unsupported model_type {quoted(model_type)} "
                              f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")

    def need(key: str, kind: str = "int") -> Any:
        return f.need(key, kind, model_type)

    hidden_act = f.get("hidden_act", "str", "silu")
    if hidden_act != "silu":
        raise CheckpointError(f"{source}: hidden_act {quoted(hidden_act)} is not supported (SwiGLU needs 'silu')")
    if model_type == "llama" and (f.get("attention_bias", "bool") or f.get("mlp_bias", "bool")):
        raise CheckpointError(f"{source}: llama with attention_bias/mlp_bias is not supported "
                              "(the lab's decoder has biases on q/k/v only)")
    if model_type in ("qwen2", "qwen2_moe") and f.get("use_sliding_window", "bool"):
        raise CheckpointError(f"{source}: use_sliding_window=true is not supported for {model_type}")

    n_heads = need("num_attention_heads")
    rope_theta, rope_scaling = _rope(f, model_type)
    dtype = f.get("dtype", "str") or f.get("torch_dtype", "str") or "float32"
    fields: dict[str, Any] = dict(
        vocab_size=need("vocab_size"),
        dim=need("hidden_size"),
        n_layers=need("num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=f.get("num_key_value_heads", "int") or n_heads,
        head_dim=f.get("head_dim", "int") or None,
        ffn_dim=need("intermediate_size"),
        qkv_bias=model_type == "qwen2" or (model_type == "qwen2_moe" and f.get("qkv_bias", "bool", True)),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        norm_eps=float(f.get("rms_norm_eps", "number") or _DEFAULT_NORM_EPS[model_type]),
        max_seq_len=f.get("max_position_embeddings", "int") or 2048,
        tie_embeddings=f.get("tie_word_embeddings", "bool", False),
        sliding_window=f.get("sliding_window", "int") if model_type in ("mistral", "mixtral") else None,
        dtype=dtype,
        extra={k: d[k] for k in _PASSTHROUGH if k in d and (d[k] is None or f.get(k, "int") is not None
                                                            or f.get(k, "ints") is not None)},
    )
    if model_type == "mixtral":
        fields.update(n_experts=need("num_local_experts"), top_k=need("num_experts_per_tok"),
                      routing="topk_softmax", moe_ffn_dim=fields["ffn_dim"])
    elif model_type == "qwen2_moe":
        n_layers, step = fields["n_layers"], f.get("decoder_sparse_step", "int") or 1
        if step < 1:
            raise f.fail("decoder_sparse_step", "must be a positive integer")
        dense_layers = set(f.get("mlp_only_layers", "ints") or ())
        fields.update(
            n_experts=need("num_experts"), top_k=need("num_experts_per_tok"),
            routing="topk_softmax" if f.get("norm_topk_prob", "bool", False) else "softmax_topk",
            moe_ffn_dim=need("moe_intermediate_size"),
            shared_expert_ffn_dim=(0 if f.get(SHARED_EXPERT_PLACEHOLDER, "bool", False)
                                   else f.get("shared_expert_intermediate_size", "int") or 0),
            moe_layers=tuple(i for i in range(n_layers) if i not in dense_layers and (i + 1) % step == 0),
        )
    if fields.get("n_experts"):
        fields["aux_loss_coef"] = float(f.get("router_aux_loss_coef", "number", 0.001))
        fields["z_loss_coef"] = float(f.get("router_z_loss_coef", "number", 0.01))
        # A lab-only key: absent in every checkpoint written before it existed, which averaged.
        fields["router_loss_aggregation"] = f.get("router_loss_aggregation", "str", "mean")
        # Lab-only keys too: absent means the load-balancing loss, as before they existed.
        fields["balance"] = f.get("balance", "str", "aux_loss")
        fields["balance_bias_rate"] = float(f.get("balance_bias_rate", "number", 0.001))
    inserted = f.get(INSERTED_LAYERS, "ints")
    if inserted is not None:
        if len(set(inserted)) != len(inserted) or not all(0 <= i < fields["n_layers"] for i in inserted):
            raise f.fail(INSERTED_LAYERS, f"must list distinct layers in [0, {fields['n_layers']})")
        fields["extra"][INSERTED_LAYERS] = sorted(inserted)
    masks = f.get(MSG_MASKS, "mapping")
    if masks is not None:  # checked against the model's shape when the model is built (lab.msg_masks)
        fields["extra"][MSG_MASKS] = dict(masks)
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


def why_model_type(cfg: ModelConfig) -> str:
    """`hf_model_type`'s choice for an MoE config put into words (for a command to print)."""
    model_type = hf_model_type(cfg)
    if model_type == "mixtral":
        return "every layer is MoE, no q/k/v bias, topk_softmax routing"
    reasons = []
    if cfg.qkv_bias:
        reasons.append("the source has q/k/v bias")
    if cfg.routing != "topk_softmax":
        reasons.append(f"{cfg.routing} routing needs norm_topk_prob=false")
    if cfg.n_moe_layers != cfg.n_layers:
        reasons.append(f"only layers {list(cfg.moe_layers)} are MoE")
    if cfg.shared_expert_ffn_dim:
        reasons.append("it has a shared expert")
    return "; ".join(reasons)


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
                 shared_expert_intermediate_size=cfg.shared_expert_ffn_dim or PLACEHOLDER_SHARED_EXPERT_SIZE,
                 decoder_sparse_step=1,
                 mlp_only_layers=[i for i in range(cfg.n_layers) if not cfg.is_moe_layer(i)],
                 qkv_bias=True, output_router_logits=False)
        if not cfg.shared_expert_ffn_dim:
            d[SHARED_EXPERT_PLACEHOLDER] = True
    if cfg.is_moe:
        # router_aux_loss_coef is transformers' own key; the others are the lab's, kept by transformers
        # as plain attributes of the config (transformers routes without the aux-free bias: lab.checkpoint.hf_names).
        d.update(router_aux_loss_coef=cfg.aux_loss_coef, router_z_loss_coef=cfg.z_loss_coef,
                 router_loss_aggregation=cfg.router_loss_aggregation, balance=cfg.balance,
                 balance_bias_rate=cfg.balance_bias_rate)
    d.update({k: v for k, v in cfg.extra.items() if k in _PASSTHROUGH})
    if cfg.extra.get(INSERTED_LAYERS):
        d[INSERTED_LAYERS] = sorted(cfg.extra[INSERTED_LAYERS])
    if cfg.extra.get(MSG_MASKS):
        d[MSG_MASKS] = cfg.extra[MSG_MASKS]
    return d
