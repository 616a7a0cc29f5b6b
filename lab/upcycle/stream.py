"""Upcycle a checkpoint directory tensor by tensor, or a model in memory: the same rule either way.

`upcycle_checkpoint` reads the dense source one tensor at a time and writes the MoE checkpoint as its
tensors are made (peak memory: a few tensors), to a temporary sibling renamed at the end.
`upcycle_model` applies `UpcycleTensors` to a model's state dict, for notebooks.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lab.checkpoint.io import check_output_dir
from lab.checkpoint.streaming import CheckpointSource, parameter_shapes, write_lab_checkpoint
from lab.config import dtype_name
from lab.upcycle.plan import UpcyclePlan, output_model_type, upcycle_config
from lab.upcycle.sparse import UpcycleTensors


def upcycle_checkpoint(source_dir: str | os.PathLike, output_dir: str | os.PathLike, plan: UpcyclePlan, *,
                       overwrite: bool = False, max_shard_size: int | str = "5GB",
                       progress: str | None = None) -> Path:
    """Write the upcycled MoE of the dense checkpoint `source_dir` to `output_dir` (mixtral or qwen2_moe,
    as `output_model_type` says), with the source's dtype and tokenizer files.

    Everything is checked before anything is written: `output_dir` must not exist (unless `overwrite`),
    and the plan must fit the source (`check_plan`).
    """
    check_output_dir(output_dir, overwrite, inputs=(source_dir,))
    with CheckpointSource(source_dir) as source:
        target = upcycle_config(source.config, plan)
        model_type, _ = output_model_type(target)
        make = UpcycleTensors(plan, source.config, target, source.tensor)
        return write_lab_checkpoint(output_dir, target, make, model_type=model_type,
                                    extra_files=source.tokenizer_files(), max_shard_size=max_shard_size,
                                    overwrite=overwrite, progress=progress)


@torch.no_grad()
def upcycle_model(model, plan: UpcyclePlan):
    """The upcycled MoE of a dense lab model (a new DecoderLM, same dtype and device; the source is untouched)."""
    from lab.model import DecoderLM

    state = model.state_dict()
    target = upcycle_config(model.config, plan)
    make = UpcycleTensors(plan, model.config, target, state.__getitem__)
    reference = next(iter(state.values()))
    # clone(): copied tensors must not share storage with the source, which training would then change too.
    new_state = {name: make(name).to(dtype=reference.dtype, device=reference.device).clone()
                 for name in parameter_shapes(target)}
    with torch.device("meta"):  # the config says what the weights are, whatever the source's config said
        moe = DecoderLM(target.replace(dtype=dtype_name(reference.dtype)))
    moe.load_state_dict(new_state, strict=True, assign=True)
    return moe.train(model.training)
