"""The lab objects that cross between the grader and the student's process: ModelConfig, MLP, Attention, DecoderLM.

An object travels as its sizes and its tensors (`state_dict`), never as code or a pickle. The receiving
side checks that the sizes describe a small model (MAX_PARAMETERS: no question needs more), builds one
and assigns the received tensors to it: every tensor must have its parameter's name and shape, or the
value is refused. (Building on the meta device would need no such bound, but its first use costs
seconds of torch's start-up on every grading.) What is not a tensor but changes what the module computes travels too:
each attention block's `layer`, the index it reads and writes in a KV cache, and the train/eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lab.config import ModelConfig
from lab.grading.wire import Decoder, Encoder, WireError
from lab.mlp import MLP
from lab.model import Attention, DecoderLM

MAX_LAYERS = 512
MAX_SIZE = 1 << 20
MAX_PARAMETERS = 50_000_000


def _attention_parameters(dim: int, n_heads: int, n_kv_heads: int, head_dim: int) -> int:
    return dim * head_dim * (2 * n_heads + 2 * n_kv_heads)


def _model_parameters(cfg: ModelConfig, n_layers: int) -> int:
    per_layer = _attention_parameters(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
    dense = 3 * cfg.dim * cfg.ffn_dim
    moe = cfg.n_experts * (3 * cfg.dim * cfg.moe_ffn_dim + cfg.dim) + 3 * cfg.dim * cfg.shared_expert_ffn_dim
    return 2 * cfg.vocab_size * cfg.dim + n_layers * (per_layer + max(dense, moe))


def _check_small(parameters: int, what: str) -> None:
    if parameters > MAX_PARAMETERS:
        raise WireError(f"a {what} of {parameters:,} parameters, larger than the grader accepts")


def _plain_int(value: Any) -> int | None:
    return value if type(value) is int else None


def encode_object(v: Any, enc: Encoder) -> dict | None:
    """The wire form of a lab object, or None when `v` is not one (the encoder then refuses it)."""
    if isinstance(v, ModelConfig):
        return {"object": {"kind": "ModelConfig", "config": v.to_dict()}}
    if not isinstance(v, nn.Module):
        return None
    state = {name: enc.tensor(t) for name, t in v.state_dict(keep_vars=True).items()}
    common = {"training": bool(v.training), "state": state}
    if type(v) is MLP:
        return {"object": {"kind": "MLP", "dim": v.gate_proj.in_features, "ffn_dim": v.gate_proj.out_features,
                           **common}}
    if type(v) is Attention:
        return {"object": {"kind": "Attention", "dim": v.q_proj.in_features, "n_heads": _plain_int(v.n_heads),
                           "n_kv_heads": _plain_int(v.n_kv_heads), "head_dim": _plain_int(v.head_dim),
                           "qkv_bias": v.q_proj.bias is not None, "sliding_window": _plain_int(v.sliding_window),
                           "layer": _plain_int(v.layer), **common}}
    if type(v) is DecoderLM:
        return {"object": {"kind": "DecoderLM", "config": v.config.to_dict(), "n_blocks": len(v.layers),
                           "attn_layers": [_plain_int(getattr(b.attn, "layer", None)) for b in v.layers], **common}}
    raise WireError(f"a {type(v).__name__} cannot be sent back to the grader: the questions expect an MLP, "
                    "an Attention or a DecoderLM of the lab")


def _config(values: Any) -> ModelConfig:
    if not isinstance(values, dict):
        raise WireError("a garbled ModelConfig")
    try:
        cfg = ModelConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise WireError(f"an invalid ModelConfig: {str(e).splitlines()[0][:200]}") from None
    if cfg.n_layers > MAX_LAYERS or max(cfg.dim, cfg.vocab_size, cfg.ffn_dim) > MAX_SIZE:
        raise WireError("a ModelConfig larger than the grader accepts")
    return cfg


def _size(body: dict, key: str) -> int:
    value = body.get(key)
    if type(value) is not int or not 0 < value <= MAX_SIZE:
        raise WireError(f"a garbled {body.get('kind')} ({key}={value!r})")
    return value


def assign_tensors(module: nn.Module, body: dict, dec: Decoder, what: str) -> nn.Module:
    """Give `module` the tensors of its wire form (`load_state_dict(assign=True)`: storages shared, not
    copied) and its train/eval mode; WireError unless the names and shapes are exactly its own."""
    state = body.get("state")
    if not isinstance(state, dict) or len(state) > 100_000:
        raise WireError(f"a garbled {what}")
    tensors = {name: dec.value(spec) for name, spec in state.items()}
    if not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise WireError(f"a garbled {what}")
    try:
        module.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise WireError(f"your {what} does not have the parameters its sizes call for ({detail})") from None
    return module.train(body.get("training") is True)


def decode_object(body: dict, dec: Decoder) -> Any:
    """A lab object rebuilt from its wire form; WireError when anything about it does not add up."""
    kind = body.get("kind")
    if kind == "ModelConfig":
        return _config(body.get("config"))
    if kind == "MLP":
        dim, ffn_dim = _size(body, "dim"), _size(body, "ffn_dim")
        _check_small(3 * dim * ffn_dim, "MLP")
        module = MLP(dim, ffn_dim)
        return assign_tensors(module, body, dec, "MLP")
    if kind == "Attention":
        sizes = {k: _size(body, k) for k in ("dim", "n_heads", "n_kv_heads", "head_dim")}
        window = body.get("sliding_window")
        try:
            cfg = ModelConfig(vocab_size=1, n_layers=1, ffn_dim=1, qkv_bias=body.get("qkv_bias") is True,
                              sliding_window=window if type(window) is int else None, **sizes)
        except ValueError as e:
            raise WireError(f"an impossible Attention: {str(e)[:200]}") from None
        layer = body.get("layer")
        _check_small(_attention_parameters(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim), "Attention")
        module = Attention(cfg, layer=layer if type(layer) is int else 0)
        module.layer = layer  # whatever the student's block holds, so that a wrong index shows
        return assign_tensors(module, body, dec, "Attention")
    if kind == "DecoderLM":
        cfg = _config(body.get("config"))
        blocks = body.get("n_blocks")
        if type(blocks) is not int or not 0 < blocks <= MAX_LAYERS:
            raise WireError("a garbled DecoderLM (its number of layers)")
        try:
            shape = cfg if blocks == cfg.n_layers else cfg.replace(n_layers=blocks)
        except ValueError as e:
            raise WireError(f"a DecoderLM whose {blocks} layers do not fit its config: {str(e)[:200]}") from None
        _check_small(_model_parameters(shape, blocks), "DecoderLM")
        module = DecoderLM(shape)
        module.config = cfg  # the config the student's model claims, which a question may check
        layers = body.get("attn_layers")
        if not isinstance(layers, list) or len(layers) != blocks:
            raise WireError("a garbled DecoderLM (its attention blocks)")
        for block, layer in zip(module.layers, layers):
            block.attn.layer = layer
        return assign_tensors(module, body, dec, "DecoderLM")
    raise WireError(f"an object of an unknown kind {kind!r}")
