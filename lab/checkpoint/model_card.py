"""The model card (`README.md`) every checkpoint the lab writes carries: Hugging Face metadata in a YAML
header (`library_name: transformers`, `base_model` where the model was made from another, tags), then
what made it: the growth or upcycling plan, or the training, and the command.

The header is what the Hub and `huggingface_hub.ModelCard` read; `base_model` is the source as it was
given (a Hub id, or a local path for checkpoints made here). Values are written as JSON scalars, which
YAML reads as they are, so a path or a command never needs escaping by hand.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from typing import Any

from lab.config import ModelConfig

README = "README.md"
LIBRARY_TAG = "efficientscale-lab"


def plan_details(plan) -> dict[str, Any]:
    """A growth or upcycling plan's own options (its configs left out: the checkpoint's config.json is the
    target, and `base_model` names the source)."""
    if not is_dataclass(plan):
        raise TypeError(f"not a plan: {plan!r}")
    return {f.name: getattr(plan, f.name) for f in fields(plan)
            if not isinstance(getattr(plan, f.name), ModelConfig)}


def model_card(*, title: str, summary: str, cfg: ModelConfig, model_type: str, base_model: str | None = None,
               tags: tuple[str, ...] = (), details: dict[str, Any] | None = None,
               command: str | None = None) -> str:
    """README.md text for a checkpoint of config `cfg` written as `model_type`."""
    header = {"library_name": "transformers", "pipeline_tag": "text-generation",
              "tags": [LIBRARY_TAG, model_type, *tags]}
    if base_model is not None:
        header["base_model"] = str(base_model)
    lines = ["---"]
    for key, value in header.items():
        if isinstance(value, list):
            lines.append(f"{key}:")
            lines += [f"  - {json.dumps(v, ensure_ascii=False)}" for v in dict.fromkeys(value)]
        else:
            lines.append(f"{key}: {json.dumps(value, ensure_ascii=False)}")
    lines += ["---", "", f"# {title}", "", summary, ""]
    shape = (f"{cfg.n_layers} layers, hidden size {cfg.dim}, {cfg.n_heads} heads ({cfg.n_kv_heads} kv), "
             f"intermediate size {cfg.ffn_dim}, vocabulary {cfg.vocab_size}, {cfg.dtype}")
    if cfg.is_moe:
        shape += (f"; {cfg.n_experts} experts, top-{cfg.top_k}, expert intermediate size {cfg.moe_ffn_dim}, "
                  f"{cfg.routing} routing")
        if cfg.shared_expert_ffn_dim:
            shape += f", shared expert intermediate size {cfg.shared_expert_ffn_dim}"
    lines += [f"- model type: `{model_type}` ({shape})"]
    if base_model is not None:
        lines.append(f"- made from: `{base_model}`")
    for key, value in (details or {}).items():
        lines.append(f"- {key}: `{json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value}`")
    if command:
        lines += ["", "Made with:", "", "```", command, "```"]
    lines += ["", "Open it with `transformers.AutoModelForCausalLM.from_pretrained(path)` or "
              "`lab.load_pretrained(path)`."]
    return "\n".join(lines) + "\n"
