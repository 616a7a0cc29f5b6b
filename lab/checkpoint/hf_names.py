"""Tensor names: the lab's parameters <-> the tensors of a Hugging Face checkpoint.

Experts are stacked in the lab (E, F, D) and stored one tensor per expert on disk, the layout that
transformers 4.x and 5.x both open (`experts.{e}.w1/w2/w3` for Mixtral, `experts.{e}.gate_proj/...`
for Qwen2-MoE).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.checkpoint.hf_config import PLACEHOLDER_SHARED_EXPERT_SIZE
from lab.config import ModelConfig

# Mixtral names its expert projections w1 (gate), w3 (up), w2 (down).
_EXPERT_NAMES = {
    "mixtral": ("block_sparse_moe", "gate", {"w_gate": "w1", "w_up": "w3", "w_down": "w2"}),
    "qwen2_moe": ("mlp", "gate", {"w_gate": "gate_proj", "w_up": "up_proj", "w_down": "down_proj"}),
}


@dataclass(frozen=True)
class TensorMap:
    """One lab parameter and the checkpoint tensor(s) it is made of.

    With `stacked`, the lab tensor is the checkpoint tensors stacked on a new first dimension.
    """

    lab: str
    hf: tuple[str, ...]
    stacked: bool = False


def tensor_maps(cfg: ModelConfig, model_type: str) -> list[TensorMap]:
    """Every parameter of a lab model of config `cfg`, mapped to a checkpoint of `model_type`."""
    maps = [TensorMap("tok_embeddings.weight", ("model.embed_tokens.weight",)),
            TensorMap("norm.weight", ("model.norm.weight",))]
    if not cfg.tie_embeddings:
        maps.append(TensorMap("lm_head.weight", ("lm_head.weight",)))
    for i in range(cfg.n_layers):
        lab, hf = f"layers.{i}", f"model.layers.{i}"
        maps += [TensorMap(f"{lab}.attn_norm.weight", (f"{hf}.input_layernorm.weight",)),
                 TensorMap(f"{lab}.mlp_norm.weight", (f"{hf}.post_attention_layernorm.weight",))]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            maps.append(TensorMap(f"{lab}.attn.{proj}.weight", (f"{hf}.self_attn.{proj}.weight",)))
            if cfg.qkv_bias and proj != "o_proj":
                maps.append(TensorMap(f"{lab}.attn.{proj}.bias", (f"{hf}.self_attn.{proj}.bias",)))
        if not cfg.is_moe_layer(i):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                maps.append(TensorMap(f"{lab}.mlp.{proj}.weight", (f"{hf}.mlp.{proj}.weight",)))
            continue
        block, router, experts = _EXPERT_NAMES[model_type]
        moe = f"{hf}.{block}"
        maps.append(TensorMap(f"{lab}.mlp.router.weight", (f"{moe}.{router}.weight",)))
        for ours, theirs in experts.items():
            names = tuple(f"{moe}.experts.{e}.{theirs}.weight" for e in range(cfg.n_experts))
            maps.append(TensorMap(f"{lab}.mlp.{ours}", names, stacked=True))
        if cfg.shared_expert_ffn_dim:
            for proj in ("gate_proj", "up_proj", "down_proj"):
                maps.append(TensorMap(f"{lab}.mlp.shared_expert.{proj}.weight", (f"{moe}.shared_expert.{proj}.weight",)))
            maps.append(TensorMap(f"{lab}.mlp.shared_expert_gate.weight", (f"{moe}.shared_expert_gate.weight",)))
    return maps


def expert_bias_maps(cfg: ModelConfig, model_type: str) -> list[TensorMap]:
    """The aux-free expert biases (`balance="aux_free"`, lab.moe): buffers, not parameters, stored beside the
    router as `<moe block>.gate.e_score_correction_bias` (E,), DeepSeek-V3's name for the same bias.

    transformers' mixtral and qwen2_moe have no such tensor: they load the checkpoint, leave it unused, and
    route without the bias; the lab reads it back. With a nonzero bias the two choose different experts
    (`lab.save_pretrained` warns). A checkpoint without it (an upcycled model) reads as a zero bias.
    """
    if cfg.balance != "aux_free":
        return []
    block, router, _ = _EXPERT_NAMES[model_type]
    return [TensorMap(f"layers.{i}.mlp.expert_bias", (f"model.layers.{i}.{block}.{router}.e_score_correction_bias",))
            for i in range(cfg.n_layers) if cfg.is_moe_layer(i)]


def filler_tensors(cfg: ModelConfig, model_type: str) -> dict[str, tuple[int, ...]]:
    """Tensors a `qwen2_moe` checkpoint must hold although the model has no such parameter: zero q/k/v
    biases for a model without them, and a one-unit shared expert of zeros with a zero gate for a model
    without one (`hf_config.SHARED_EXPERT_PLACEHOLDER`). Zeros there leave the function unchanged.
    Returns name -> shape."""
    if model_type != "qwen2_moe":
        return {}
    fillers: dict[str, tuple[int, ...]] = {}
    for i in range(cfg.n_layers):
        hf = f"model.layers.{i}"
        if not cfg.qkv_bias:
            fillers[f"{hf}.self_attn.q_proj.bias"] = (cfg.n_heads * cfg.head_dim,)
            fillers[f"{hf}.self_attn.k_proj.bias"] = (cfg.n_kv_heads * cfg.head_dim,)
            fillers[f"{hf}.self_attn.v_proj.bias"] = (cfg.n_kv_heads * cfg.head_dim,)
        if cfg.is_moe_layer(i) and not cfg.shared_expert_ffn_dim:
            units = PLACEHOLDER_SHARED_EXPERT_SIZE
            fillers[f"{hf}.mlp.shared_expert.gate_proj.weight"] = (units, cfg.dim)
            fillers[f"{hf}.mlp.shared_expert.up_proj.weight"] = (units, cfg.dim)
            fillers[f"{hf}.mlp.shared_expert.down_proj.weight"] = (cfg.dim, units)
            fillers[f"{hf}.mlp.shared_expert_gate.weight"] = (1, cfg.dim)
    return fillers
