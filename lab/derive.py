"""Derive one model from another by a per-tensor rule: Scale-Up (growth) and Scale-Out (upcycling), between
checkpoint directories or in memory, with the same rule either way.

A rule is a callable `make(name, expert)` that returns any tensor of the derived model by its lab name,
reading the source's tensors by name as it needs them (`lab.growth.GrowthTensors`,
`lab.upcycle.UpcycleTensors`); the rules know nothing of files. This module gives them their two
transports:

- streaming (`derive_checkpoint`): the source is read one tensor at a time (`CheckpointSource`) and the
  output written as its tensors are made (`write_lab_checkpoint`, to a temporary sibling renamed at the
  end). The output's shapes follow from the target config, so the whole layout is known before anything
  is made; peak memory stays near a few tensors, never a model. The output keeps the source's dtype and
  tokenizer files;
- in memory (`derive_model`): every tensor of the target is made from a model's state dict, into a new
  DecoderLM of the source's dtype and device. Nothing shares storage with the source (a copied tensor
  would otherwise be changed by training the source, or tie two layers of the derived model).

The dtype is decided once, here: the source's, whatever its config says.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch

from lab.heap import reuse_freed_memory
from lab.checkpoint.hf_config import INSERTED_LAYERS, hf_model_type
from lab.checkpoint.io import check_output_dir
from lab.checkpoint.memo import RepeatMemo
from lab.checkpoint.model_card import model_card, plan_details
from lab.checkpoint.streaming import CheckpointSource, MakeTensor, write_lab_checkpoint
from lab.config import ModelConfig, dtype_name
from lab.errors import LabError
from lab.growth.depth import inserted_copies
from lab.growth.plan import GrowthPlan
from lab.growth.msg import MaskedGrowthTensors
from lab.growth.transform import GrowthTensors
from lab.model import parameter_shapes
from lab.upcycle.plan import UpcyclePlan, upcycle_config
from lab.upcycle.sparse import UpcycleTensors

# rule(source config, read) -> (target config, make): how a derivation is described to both transports.
Rule = Callable[[ModelConfig, Callable[[str], torch.Tensor]], tuple[ModelConfig, MakeTensor]]

_SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "qkv_bias",
                 "tie_embeddings", "n_experts")


def derive_checkpoint(source_dir: str | os.PathLike, output_dir: str | os.PathLike, rule: Rule, *,
                      card: dict, keep_model_type: bool = False, overwrite: bool = False,
                      max_shard_size: int | str = "5GB", progress: str | None = None) -> Path:
    """Write the model `rule` derives from the checkpoint `source_dir` to `output_dir`, tensor by tensor.

    The model type is the source's with `keep_model_type` (growth: qwen2 stays qwen2, llama stays llama),
    else the one the target config needs (`hf_model_type`: upcycling writes mixtral or qwen2_moe). `card`
    holds the model card's title, summary, tags, details and command (`lab.checkpoint.model_card`); its
    base model is `source_dir`. An existing `output_dir` is refused unless `overwrite`, before any work.
    """
    check_output_dir(output_dir, overwrite, inputs=(source_dir,))
    with CheckpointSource(source_dir) as source, reuse_freed_memory(), _torch_threads_besides_the_writer():
        target, make = rule(source.config, source.tensor)
        target = target.replace(dtype=source.config.dtype)
        model_type = source.model_type if keep_model_type else hf_model_type(target)
        readme = model_card(cfg=target, model_type=model_type, base_model=str(source_dir), **card)
        return write_lab_checkpoint(output_dir, target, make, model_type=model_type,
                                    extra_files=source.tokenizer_files(), max_shard_size=max_shard_size,
                                    overwrite=overwrite, progress=progress, readme=readme)


@contextmanager
def _torch_threads_besides_the_writer() -> Iterator[None]:
    """One core fewer for torch while a checkpoint is streamed: the writer's thread (`WriteBehind`) takes one.
    The rules' operations are copies and element-wise passes over a few MB each, which a second OpenMP
    thread barely speeds up; between them it spins on a core, and measured on a busy two-core machine that
    slowed upcycling from 1.2x to 2x the copy of its output."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def derive_state_dict(state: dict[str, torch.Tensor], rule: Rule, source: ModelConfig
                      ) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """The derived config (in the state's dtype) and parameters (lab names, the state's dtype and device,
    every tensor new) from a source state dict."""
    def read(name: str) -> torch.Tensor:
        if name == "lm_head.weight" and name not in state:
            return state["tok_embeddings.weight"]  # a tied source: the LM head is the embedding
        return state[name]

    target, make = rule(source, read)
    reference = next(iter(state.values()))
    target = target.replace(dtype=dtype_name(reference.dtype))
    names = list(parameter_shapes(target))
    key = getattr(make, "key", None)
    memo = RepeatMemo([(name,) if key is None else key(name, None) for name in names])  # repeats made once
    return target, {name: memo.get(i, lambda: make(name, None)).to(dtype=reference.dtype, device=reference.device,
                                                                    copy=True)
                    for i, name in enumerate(names)}


@torch.no_grad()
def derive_model(model, rule: Rule):
    """The DecoderLM `rule` derives from a lab model (a new model in training mode if the source was;
    the source is untouched)."""
    from lab.model import DecoderLM

    target, state = derive_state_dict(model.state_dict(), rule, model.config)
    with torch.device("meta"):
        derived = DecoderLM(target)
    derived.load_state_dict(state, strict=True, assign=True)
    return derived.train(model.training)


# ---------------------------------------------------------------------------- Scale-Up
def growth_rule(plan: GrowthPlan, where: str = "the model") -> Rule:
    """Growth by `plan` (lab.growth): the plan must have been made from this source's config (`where`
    names the source in the error that says it was not)."""
    def rule(source: ModelConfig, read) -> tuple[ModelConfig, MakeTensor]:
        mismatch = [f for f in _SHAPE_FIELDS if getattr(source, f) != getattr(plan.source, f)]
        if mismatch:
            raise LabError(f"{where}: the plan was made for another source ({mismatch[0]} "
                           f"{getattr(plan.source, mismatch[0])} != {getattr(source, mismatch[0])})")
        if plan.method == "msg":  # masked growth: its own rule, and a target config that records the masks
            masked = MaskedGrowthTensors(plan, read)
            return with_inserted_layers(masked.target, masked.new_layers), masked
        make = GrowthTensors(plan, read)
        return with_inserted_layers(plan.target, inserted_copies(make.order)), make

    return rule


def with_inserted_layers(cfg: ModelConfig, inserted: set[int]) -> ModelConfig:
    """A copy of `cfg` that records the decoder layers depth growth inserted (config.json's `inserted_layers`),
    the blocks `train.trainable: new-blocks` trains (LLaMA-Pro, Wu et al. 2024, arXiv 2401.02415). A record
    the source carried is replaced: its layer indices mean nothing after another growth."""
    target = cfg.replace()
    target.extra.pop(INSERTED_LAYERS, None)
    if inserted:
        target.extra[INSERTED_LAYERS] = sorted(inserted)
    return target


def grow_checkpoint(source_dir: str | os.PathLike, output_dir: str | os.PathLike, plan: GrowthPlan, *,
                    overwrite: bool = False, max_shard_size: int | str = "5GB",
                    progress: str | None = None, command: str | None = None) -> Path:
    """Write the grown model of the checkpoint `source_dir` to `output_dir` (same model type, dtype and
    tokenizer files as the source); `plan` must have been made from this source's config (`plan_growth`).
    `command` (what the user ran) goes into the model card."""
    card = {"title": f"{Path(output_dir).name}: grown by {plan.method}",
            "summary": (f"Grown (Scale-Up, AquilaMoE arXiv 2408.06567) from `{source_dir}`: {plan.method} width, "
                        f"{plan.depth} depth; {'function-preserving' if plan.is_exact else 'not function-preserving'}."
                        " Continue pretraining before use."),
            "tags": ("model-growth", plan.method), "details": {"growth plan": plan_details(plan)},
            "command": command}
    return derive_checkpoint(source_dir, output_dir, growth_rule(plan, str(source_dir)), card=card,
                             keep_model_type=True, overwrite=overwrite, max_shard_size=max_shard_size,
                             progress=progress)


def grow_state_dict(state: dict[str, torch.Tensor], plan: GrowthPlan) -> dict[str, torch.Tensor]:
    """The grown model's parameters from a source state dict (lab names), same dtype and device."""
    return derive_state_dict(state, growth_rule(plan), plan.source)[1]


def grow_model(model, plan: GrowthPlan):
    """The grown DecoderLM of a lab model (a new model; the source is untouched)."""
    return derive_model(model, growth_rule(plan))


# ---------------------------------------------------------------------------- Scale-Out
def upcycle_rule(plan: UpcyclePlan) -> Rule:
    """Sparse upcycling by `plan` (lab.upcycle), checked against the source (`upcycle_config`)."""
    def rule(source: ModelConfig, read) -> tuple[ModelConfig, MakeTensor]:
        target = upcycle_config(source, plan)
        return target, UpcycleTensors(plan, source, target, read)

    return rule


def upcycle_checkpoint(source_dir: str | os.PathLike, output_dir: str | os.PathLike, plan: UpcyclePlan, *,
                       overwrite: bool = False, max_shard_size: int | str = "5GB",
                       progress: str | None = None, command: str | None = None) -> Path:
    """Write the upcycled MoE of the dense checkpoint `source_dir` to `output_dir` (mixtral or qwen2_moe,
    as `hf_model_type` decides), with the source's dtype and tokenizer files. `command` (what the user
    ran) goes into the model card."""
    shared = (f", with {plan.shared_experts} of the dense MLP's {plan.granularity} slices as one always-on "
              "shared expert (DeepSeekMoE arXiv 2401.06066, Qwen2-MoE)" if plan.shared_experts else "")
    card = {"title": f"{Path(output_dir).name}: upcycled to {plan.n_experts} experts, top-{plan.top_k}"
                     + (f", {plan.shared_experts} shared" if plan.shared_experts else ""),
            "summary": (f"Sparse upcycling (Scale-Out; Komatsuzaki et al. 2023, He et al. 2024) of the dense "
                        f"`{source_dir}`{shared}. Continue pretraining before use."),
            "tags": ("moe", "sparse-upcycling", *(("shared-experts",) if plan.shared_experts else ())),
            "details": {"upcycling plan": plan_details(plan)},
            "command": command}
    return derive_checkpoint(source_dir, output_dir, upcycle_rule(plan), card=card, overwrite=overwrite,
                             max_shard_size=max_shard_size, progress=progress)


def upcycle_model(model, plan: UpcyclePlan):
    """The upcycled MoE of a dense lab model (a new DecoderLM, same dtype and device; the source is untouched)."""
    return derive_model(model, upcycle_rule(plan))
