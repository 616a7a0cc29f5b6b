"""Recipes: one YAML schema for every training run, from the tiny CPU run to the paper's sizes.

```yaml
run: tiny                 # the run's name (metrics records carry it)
stage: pretrain           # what this run is in a pipeline: pretrain, scale-up, scale-out, ...
seed: 0                   # model initialisation and data order
model: {dim: 128, ...}    # ModelConfig fields; or instead:
init_from: path/to/ckpt   # a Hugging Face directory to start from (its config.json gives the model)
data:    {corpus: null, tokenizer: null, tokens: null, seq_len: 128, batch_size: 16, grad_accum: 1,
          domains: null}
optim:   {lr: 3.0e-3, min_lr_ratio: 0.1, warmup_steps: 30, schedule: cosine, weight_decay: 0.1,
          betas: [0.9, 0.95], eps: 1.0e-8, grad_clip: 1.0}
train:   {max_steps: 300, eval_every: 50, eval_sequences: 8, save_every: 100, keep_checkpoints: 2,
          log_every: 1, precision: fp32, sample_tokens: 32, trainable: all}
hardware: {device: auto, peak_tflops: null, gpu: null, compile: false, activation_checkpointing: false,
           meta_init: auto, fused_optimizer: auto, expert_parallel: 1, shard_group: null}
```

Every key is checked: an unknown key, a wrong type or a value out of range raises one LabError
naming it (`recipe optim.lr: must be > 0, got -1`). `data.batch_size` is the number of sequences of
one micro-batch across all processes; an optimizer step takes `grad_accum` of them. `corpus`,
`tokenizer` and `init_from` paths are relative to the current directory; null means the shipped
corpus and tokenizer. `tokens` names a folder of token shards (`python -m lab data build`) to train
on instead of the corpus's train split, read through memory maps; validation stays on `corpus`'s
validation split, so losses compare with runs on the shipped corpus. `data.domains` (a list; null, the
default: every domain) restricts the training data to those domains of `tokens` or `corpus` (`[code]`
continues a model on code alone, as LLaMA-Pro does); validation still reads every domain, so a run shows
what it forgets. `optim.lr` is the peak, reached
after `warmup_steps`; the schedule ends at `min_lr_ratio * lr` after `train.max_steps`.

`train.trainable` says what the run updates: `all` (every parameter), or `new-blocks`, LLaMA-Pro's block
expansion training (Wu et al. 2024, arXiv 2401.02415): only the decoder layers depth growth inserted,
which the starting checkpoint records (config.json's `inserted_layers`, written by `python -m lab grow`);
everything else stays frozen, embeddings, final norm and LM head included (`lab.train.trainable`).

`hardware` says how to run, never what is computed (it is left out of the digest, so a run may resume
on other hardware): `compile` wraps each block in `torch.compile`; `activation_checkpointing`
recomputes each block's activations in the backward pass (less memory, about a third more compute);
`meta_init` builds a fresh model on the meta device and materialises it where it will live (`auto`:
on CUDA); `fused_optimizer` takes AdamW's fused kernel (`auto`: on CUDA). `expert_parallel` R (an MoE
under torchrun, R dividing both the number of processes and of experts) places E / R experts on each
process of a group of R and sends tokens to their experts by all-to-all, FSDP2 sharding the rest as
without it (`lab.expert_parallel`); the losses and the checkpoints are those of R = 1, so a run may
resume under another R. `shard_group` S (under torchrun, S dividing the number of processes and a multiple
of `expert_parallel`) shards every parameter inside groups of S consecutive processes and replicates it
across the groups (HSDP: the all-gathers stay inside a node); null, the default, shards over all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from lab.config import ModelConfig, without_later_defaults
from lab.errors import RecipeError, quoted
from lab.field_rules import non_negative, one_of, positive, rule
from lab.flops import PEAK_FLOPS
from lab.yaml_input import read_yaml

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
SWITCHES = ("auto", "always", "never")  # auto: on CUDA only
TRAINABLE = ("all", "new-blocks")  # what a run updates (lab.train.trainable)


@dataclass(frozen=True)
class DataSpec:
    corpus: str | None = None
    tokenizer: str | None = None
    tokens: str | None = None
    seq_len: int = field(default=128, metadata=positive())
    batch_size: int = field(default=16, metadata=positive())
    grad_accum: int = field(default=1, metadata=positive())
    # The domains training reads (None: all of them); each must be a domain of the training data (checked
    # when the data loads, `lab.data.chosen_domains`). Validation reads every domain either way.
    domains: tuple[str, ...] | None = field(default=None, metadata=rule(
        lambda v: v is None or (len(v) > 0 and len(set(v)) == len(v)), "must be a non-empty list of distinct domains"))


@dataclass(frozen=True)
class OptimSpec:
    lr: float = field(default=3e-3, metadata=positive())
    min_lr_ratio: float = field(default=0.1, metadata=rule(lambda v: 0 <= v <= 1, "must be in [0, 1]"))
    warmup_steps: int = field(default=0, metadata=non_negative())
    schedule: str = field(default="cosine", metadata=one_of(*SCHEDULES))
    weight_decay: float = field(default=0.1, metadata=non_negative())
    betas: tuple[float, float] = field(default=(0.9, 0.95),
                                       metadata=rule(lambda v: all(0 <= b < 1 for b in v), "must be in [0, 1)"))
    eps: float = field(default=1e-8, metadata=positive())
    # Clip the global gradient norm to this; 0 turns clipping off.
    grad_clip: float = field(default=1.0, metadata=non_negative())


@dataclass(frozen=True)
class TrainSpec:
    max_steps: int = field(default=100, metadata=positive())
    # 0 turns a periodic event off (evaluation and a checkpoint still happen at the last step).
    eval_every: int = field(default=50, metadata=non_negative())
    eval_sequences: int = field(default=8, metadata=positive())
    save_every: int = field(default=100, metadata=non_negative())
    keep_checkpoints: int = field(default=2, metadata=positive())
    log_every: int = field(default=1, metadata=positive())
    precision: str = field(default="fp32", metadata=one_of(*PRECISIONS))
    # Greedy tokens generated per domain prompt at each evaluation; 0 turns samples off.
    sample_tokens: int = field(default=32, metadata=non_negative())
    # all, or only the blocks depth growth inserted (LLaMA-Pro): the rest is frozen, out of the optimizer.
    trainable: str = field(default="all", metadata=one_of(*TRAINABLE))


@dataclass(frozen=True)
class HardwareSpec:
    device: str = field(default="auto", metadata=one_of(*DEVICES))
    # Peak bf16 TFLOP/s of one device, for MFU; or name a known device in `gpu` (lab.flops.PEAK_FLOPS).
    peak_tflops: float | None = field(default=None, metadata=rule(lambda v: v is None or v > 0, "must be > 0"))
    gpu: str | None = field(default=None, metadata=rule(lambda v: v is None or v in PEAK_FLOPS,
                                                         f"must be one of {', '.join(PEAK_FLOPS)}"))
    compile: bool = False
    activation_checkpointing: bool = False
    meta_init: str = field(default="auto", metadata=one_of(*SWITCHES))
    fused_optimizer: str = field(default="auto", metadata=one_of(*SWITCHES))
    # Expert parallelism: split each MoE layer's experts over groups of this many processes (lab.expert_parallel).
    expert_parallel: int = field(default=1, metadata=positive())
    # HSDP: shard the parameters inside groups of this many consecutive processes (a node), replicate them
    # across the groups (lab.distributed.shard); null: one group of every process (plain FSDP).
    shard_group: int | None = field(default=None, metadata=rule(lambda v: v is None or v > 0, "must be > 0"))

    @staticmethod
    def switch(value: str, device_type: str) -> bool:
        """Whether an `auto | always | never` switch is on for a device of `device_type`."""
        return value == "always" or (value == "auto" and device_type == "cuda")

    @property
    def peak_flops(self) -> float | None:
        if self.peak_tflops is not None:
            return self.peak_tflops * 1e12
        return PEAK_FLOPS[self.gpu] if self.gpu is not None else None


SECTIONS = {"data": DataSpec, "optim": OptimSpec, "train": TrainSpec, "hardware": HardwareSpec}
RECIPE_KEYS = ("run", "stage", "seed", "model", "init_from", *SECTIONS)


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Exactly one of `model` and `init_from` is set."""

    run: str
    stage: str = "pretrain"
    seed: int = 0
    model: ModelConfig | None = None
    init_from: str | None = None
    data: DataSpec = DataSpec()
    optim: OptimSpec = OptimSpec()
    train: TrainSpec = TrainSpec()
    hardware: HardwareSpec = HardwareSpec()

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the YAML's shape, every default filled in), as meta.json records them."""
        out: dict[str, Any] = {"run": self.run, "stage": self.stage, "seed": self.seed}
        if self.model is not None:
            out["model"] = self.model.to_dict()
        else:
            out["init_from"] = self.init_from
        for name in SECTIONS:
            out[name] = {k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(getattr(self, name)).items()}
        return out

    def digest(self) -> str:
        """A short hash of `to_dict()` without `hardware`: a run resumes only under the recipe it began with,
        but may resume on other hardware. Fields added since a run began, at their original value, are
        left out (`without_later_defaults`), so that it still resumes."""
        values = {k: v for k, v in self.to_dict().items() if k != "hardware"}
        return hashlib.sha256(json.dumps(without_later_defaults(values), sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with top-level fields changed (sections as dicts of changes, e.g. train={"max_steps": 5})."""
        values = self.to_dict()
        for key, value in changes.items():
            if key in SECTIONS and isinstance(value, dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        if "init_from" in changes and changes["init_from"] is not None:
            values.pop("model", None)
        return load_recipe(values)


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """`value` as type `kind` (int, float, str, bool, X | None, tuple[float, float]), or a LabError."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
        origin = typing.get_origin(kind)
    if origin is tuple:
        items = typing.get_args(kind)
        if len(items) == 2 and items[1] is Ellipsis:  # tuple[str, ...]: a list of any length
            if not isinstance(value, (list, tuple)):
                raise RecipeError(name, f"must be a list, got {quoted(value)}")
            return tuple(_coerce(v, items[0], name) for v in value)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise RecipeError(name, f"must be a list of {len(items)} numbers, got {quoted(value)}")
        return tuple(_coerce(v, t, name) for v, t in zip(value, items))
    if kind is bool:
        if not isinstance(value, bool):
            raise RecipeError(name, f"must be true or false, got {quoted(value)}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(name, f"must be an integer, got {quoted(value)}")
        return value
    if kind is float:
        # YAML 1.1 reads `3e-3` (no dot) as a string: accept any text that is a number.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(name, f"must be a number, got {quoted(value)}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond a float's range
            number = math.inf
        if not math.isfinite(number):
            raise RecipeError(name, f"must be a finite number, got {quoted(value)}")
        return number
    if kind is str:
        if not isinstance(value, (str, os.PathLike)):
            raise RecipeError(name, f"must be a string, got {quoted(value)}")
        return str(value)
    raise TypeError(f"no coercion for {kind}")


def _section(cls, values: Any, prefix: str):
    """Build a section dataclass from a mapping, checking every key, type and rule."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise RecipeError(prefix, f"must be a mapping of keys to values, got {quoted(values)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(k if isinstance(k, str) else quoted(k) for k in set(values) - set(fields))
    if unknown:
        raise RecipeError(f"{prefix}.{unknown[0][:60]}", f"unknown key (known: {', '.join(fields)})")
    parsed = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        parsed[key] = _coerce(value, hints[key], name)
        rule = fields[key].metadata.get("rule")
        if rule is not None and not rule[0](parsed[key]):
            raise RecipeError(name, f"{rule[1]}, got {quoted(value)}")
    return cls(**parsed)


def _model(values: Any) -> ModelConfig:
    if not isinstance(values, dict):
        raise RecipeError("model", f"must be a mapping of ModelConfig fields, got {quoted(values)}")
    try:
        return ModelConfig.from_dict(values)
    except (ValueError, TypeError) as e:
        raise RecipeError("model", str(e)[:300]) from None


def load_recipe(source: str | os.PathLike | dict | Recipe) -> Recipe:
    """A validated Recipe from a YAML file, a dict of the same shape, or a Recipe (returned as is)."""
    if isinstance(source, Recipe):
        return source
    values = read_yaml(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(values, dict):
        raise RecipeError("", f"must be a mapping with keys {', '.join(RECIPE_KEYS)}, got {type(values).__name__}")
    if "stages" in values or "pipeline" in values:
        raise RecipeError("", "this is a pipeline recipe (it has stages); run it with "
                              "`python -m lab pipeline --recipe FILE --out DIR`")
    unknown = sorted(k if isinstance(k, str) else quoted(k) for k in set(values) - set(RECIPE_KEYS))
    if unknown:
        raise RecipeError(unknown[0][:60], f"unknown key (known: {', '.join(RECIPE_KEYS)})")
    if "run" not in values:
        raise RecipeError("run", "missing (every recipe names its run)")
    run = _coerce(values["run"], str, "run")
    if not run.strip():
        raise RecipeError("run", "must not be empty")
    stage = _coerce(values.get("stage", "pretrain"), str, "stage")
    seed = _coerce(values.get("seed", 0), int, "seed")
    has_model, init_from = values.get("model") is not None, values.get("init_from")
    if has_model == (init_from is not None):
        raise RecipeError("model, init_from", "give exactly one (a model config, or a checkpoint to start from)")
    model = _model(values["model"]) if has_model else None
    init_from = _coerce(init_from, str, "init_from") if init_from is not None else None
    sections = {name: _section(cls, values.get(name), name) for name, cls in SECTIONS.items()}
    recipe = Recipe(run=run, stage=stage, seed=seed, model=model, init_from=init_from, **sections)
    if model is not None and recipe.data.seq_len > model.max_seq_len:
        raise RecipeError("data.seq_len", f"must be <= model.max_seq_len ({model.max_seq_len}), "
                                          f"got {recipe.data.seq_len}")
    return recipe
