"""Grow a checkpoint directory tensor by tensor, or a model in memory: the same rule either way.

`grow_checkpoint` reads the source one tensor at a time (two for AKI) and writes the grown checkpoint
as its tensors are made: the output's shapes follow from the target config, so the whole layout is
known before anything is made, and peak memory stays near the largest tensor, never the model.
Writing goes to a temporary sibling of the output directory, renamed when complete.
`grow_model` applies `GrowthTensors` to a model's state dict, for notebooks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lab.checkpoint.io import check_output_dir
from lab.checkpoint.streaming import CheckpointSource, parameter_shapes, write_lab_checkpoint
from lab.config import dtype_name
from lab.errors import LabError
from lab.growth.plan import GrowthPlan
from lab.growth.transform import GrowthTensors

_SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "qkv_bias",
                 "tie_embeddings", "n_experts")


def grow_checkpoint(source_dir: str | os.PathLike, output_dir: str | os.PathLike, plan: GrowthPlan, *,
                    overwrite: bool = False, max_shard_size: int | str = "5GB",
                    progress: str | None = None) -> Path:
    """Write the grown model of the checkpoint `source_dir` to `output_dir`.

    The output keeps the source's model type (qwen2 stays qwen2, llama stays llama), dtype and
    tokenizer files. `plan` must have been made from this source's config (`plan_growth`); an existing
    `output_dir` is refused unless `overwrite`, before any work.
    """
    check_output_dir(output_dir, overwrite, inputs=(source_dir,))
    with CheckpointSource(source_dir) as source:
        mismatch = [f for f in _SHAPE_FIELDS if getattr(source.config, f) != getattr(plan.source, f)]
        if mismatch:
            raise LabError(f"{source_dir}: the plan was made for another source ({mismatch[0]} "
                           f"{getattr(plan.source, mismatch[0])} != {getattr(source.config, mismatch[0])})")
        target = plan.target.replace(dtype=source.config.dtype)
        return write_lab_checkpoint(output_dir, target, GrowthTensors(plan, source.tensor),
                                    model_type=source.model_type, extra_files=source.tokenizer_files(),
                                    max_shard_size=max_shard_size, overwrite=overwrite, progress=progress)


def grow_state_dict(state: dict[str, torch.Tensor], plan: GrowthPlan) -> dict[str, torch.Tensor]:
    """The grown model's parameters from a source state dict (lab names), same dtype and device.

    Every tensor is a new one: nothing shares memory with the source or with another grown tensor
    (an unchanged tensor, or a layer repeated by depth growth, would otherwise be tied in training).
    """
    def read(name: str) -> torch.Tensor:
        if name == "lm_head.weight" and name not in state:
            return state["tok_embeddings.weight"]  # a tied source: the LM head is the embedding
        return state[name]

    make = GrowthTensors(plan, read)
    reference = next(iter(state.values()))
    return {name: make(name).to(dtype=reference.dtype, device=reference.device, copy=True)
            for name in parameter_shapes(plan.target)}


@torch.no_grad()
def grow_model(model, plan: GrowthPlan):
    """The grown DecoderLM of a lab model (a new model; the source is untouched)."""
    from lab.model import DecoderLM

    state = grow_state_dict(model.state_dict(), plan)
    with torch.device("meta"):
        grown = DecoderLM(plan.target.replace(dtype=dtype_name(next(iter(state.values())).dtype)))
    grown.load_state_dict(state, strict=True, assign=True)
    return grown.train(model.training)
