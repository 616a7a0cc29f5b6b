"""The pipeline recipe: Preparation -> Scale-Up -> Scale-Out in one YAML, every stage checked before any work.

```yaml
pipeline: efficientscale-tiny      # the name every merged metrics record carries (`run`)
seed: 0
data:     {seq_len: 128, batch_size: 16, ...}   # shared by every stage (lab.train.recipe's DataSpec)
optim:    {...}                    # defaults for every stage (OptimSpec)
train:    {...}                    # defaults for every stage (TrainSpec)
hardware: {...}                    # shared (HardwareSpec)
stages:
  - name: dense                    # a directory name: OUT/stages/dense
    stage: preparation             # the label of its records: preparation | scale-up | scale-out
    model: {dim: 128, ...}         # the first stage: a model from scratch, or instead
    # init_from: path/to/ckpt      # a Hugging Face checkpoint to continue from
    optim: {lr: 3.0e-3}            # this stage's overrides (AquilaMoE Table 3: lr, tokens, batch per stage)
    train: {max_steps: 300}
  - name: grown
    stage: scale-up
    grow: {method: aki-pro, dim: 256, n_layers: 6, n_heads: 8, ffn_dim: 704}   # lab.growth.plan_growth
    # (method msg takes ramp_steps too, at most the stage's train.max_steps: lab.growth.msg)
  - name: moe
    stage: scale-out
    upcycle: {n_experts: 8, top_k: 2}                                           # lab.upcycle.UpcyclePlan
    # (also aux_loss_coef, z_loss_coef, router_loss_aggregation: sum | mean, written to config.json;
    #  granularity, shared_experts: lab.upcycle.shared)
    data: {batch_size: 32}         # a stage may change batch_size and grad_accum only
baseline:                          # optional: the final model's shape trained from scratch
  optim: {lr: 1.0e-3}
  train: {}                        # max_steps omitted: as many steps as give the pipeline's total FLOPs
```

Each stage's training recipe is the shared sections deep-merged with the stage's, validated by
`lab.train.load_recipe`, so every key gets the training recipe's checks. A stage may not change
`data.seq_len`, the corpus, the tokenizer or `train.eval_sequences`: the loss right before and right
after a transition must be measured on the same validation windows. Growth and upcycling plans are
made against the shapes they receive, so a target smaller than its source, a bad granularity, an
unknown method are refused here, as one LabError line naming the key
(`pipeline stages[1].grow.method: must be one of fpi, aki, aki-pro, got 'x'`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import typing
from dataclasses import dataclass
from typing import Any

from lab.checkpoint.hf_config import INSERTED_LAYERS
from lab.config import BALANCES, ROUTER_LOSS_AGGREGATIONS, ModelConfig, without_later_defaults
from lab.errors import LabError, RecipeError, quoted
from lab.flops import flops_per_token
from lab.growth import DEPTH_KINDS, MAP_KINDS, METHODS, PLACEMENTS, GrowthPlan, plan_growth
from lab.train.recipe import Recipe, load_recipe
from lab.upcycle import UpcyclePlan, upcycle_config
from lab.yaml_input import read_yaml

STAGE_KINDS = ("preparation", "scale-up", "scale-out")
SHARED = ("data", "optim", "train", "hardware")
PIPELINE_KEYS = ("pipeline", "seed", *SHARED, "stages", "baseline")
STAGE_KEYS = ("name", "stage", "model", "init_from", "grow", "upcycle", "data", "optim", "train")
BASELINE_KEYS = ("name", "data", "optim", "train")
STAGE_DATA_KEYS = ("batch_size", "grad_accum")  # the rest of `data` decides the validation windows
# plan_growth's keyword arguments and their types.
GROW_OPTIONS = {"method": str, "dim": int, "ffn_dim": int, "n_layers": int, "n_heads": int, "n_kv_heads": int,
                "depth": str, "map": str, "noise": float, "seed": int, "placement": str, "ramp_steps": int}
UPCYCLE_OPTIONS = typing.get_type_hints(UpcyclePlan)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PREVIOUS = "<previous stage>"  # a later stage's init_from until the pipeline runs: the transformed checkpoint


@dataclass(frozen=True)
class Stage:
    """One validated stage: its training recipe, how its model is made, and that model's config.

    `action` is "train" (the first stage: `recipe.model` or `recipe.init_from`), "grow" or "upcycle"
    (the previous stage's final model transformed by `plan`, then trained).
    """

    index: int
    name: str
    label: str
    action: str
    recipe: Recipe
    config: ModelConfig
    plan: GrowthPlan | UpcyclePlan | None = None

    @property
    def flops(self) -> float:
        """Training FLOPs of the whole stage (lab.flops: 6N + attention per token)."""
        d = self.recipe.data
        return self.recipe.train.max_steps * d.batch_size * d.grad_accum * d.seq_len * flops_per_token(
            self.config, d.seq_len)

    def describe(self) -> str:
        def shape(c: ModelConfig) -> str:
            moe = f", {c.n_experts} experts top-{c.top_k}" if c.is_moe else ""
            return f"M({c.n_layers}, {c.dim}{moe})"

        if isinstance(self.plan, GrowthPlan):
            depth = f", {self.plan.depth} depth" if self.config.n_layers != self.plan.source.n_layers else ""
            return f"{self.plan.method} width{depth}: {shape(self.plan.source)} -> {shape(self.config)}"
        if isinstance(self.plan, UpcyclePlan):
            g = f", granularity {self.plan.granularity}" if self.plan.granularity > 1 else ""
            g += f", shared experts {self.plan.shared_experts}" if self.plan.shared_experts else ""
            return f"sparse upcycling ({self.plan.routing}{g}) -> {shape(self.config)}"
        start = f"from {self.recipe.init_from}" if self.recipe.init_from else "from scratch"
        return f"{start}: {shape(self.config)}"


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline recipe: its stages in order and the optional from-scratch baseline."""

    name: str
    seed: int
    stages: tuple[Stage, ...]
    baseline: Recipe | None
    values: dict  # the recipe as given (meta.json records it)

    @property
    def flops(self) -> float:
        return sum(s.flops for s in self.stages)

    def digest(self) -> str:
        """A short hash of the stages' and the baseline's recipes (hardware aside): resume checks it.

        Fields added since a pipeline began, at their original value, are left out (`without_later_defaults`),
        so that it still resumes."""
        parts = [{k: v for k, v in s.recipe.to_dict().items() if k != "hardware"} for s in self.stages]
        parts += [dataclasses.asdict(s.plan) if s.plan is not None else None for s in self.stages]
        if self.baseline is not None:
            parts.append({k: v for k, v in self.baseline.to_dict().items() if k != "hardware"})
        text = json.dumps(without_later_defaults(parts), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fail(where: str, message: str) -> LabError:
    return LabError(f"pipeline {where}: {message}")


def _mapping(value: Any, where: str, known: tuple[str, ...] | typing.Iterable[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(where, f"must be a mapping, got {quoted(value)}")
    known = tuple(known)
    unknown = sorted(quoted(k) if not isinstance(k, str) else k for k in set(value) - set(known))
    if unknown:
        raise _fail(f"{where}.{unknown[0][:60]}", f"unknown key (known: {', '.join(known)})")
    return value


_KIND_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _options(values: Any, kinds: dict[str, Any], where: str) -> dict:
    """Check the keys and scalar types of a plan's options (the plan checks the values)."""
    values = _mapping(values, where, kinds)
    for key, value in values.items():
        kind = kinds[key]
        ok = {int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool),
              bool: isinstance(value, bool), str: isinstance(value, str)}.get(kind, True)
        if not ok:
            raise _fail(f"{where}.{key}", f"must be {_KIND_WORDS.get(kind, kind)}, got {quoted(value)}")
        if kind is float and not math.isfinite(value):
            raise _fail(f"{where}.{key}", f"must be a finite number, got {quoted(value)}")
    return {k: float(v) if kinds[k] is float else v for k, v in values.items()}


def _choice(values: dict, key: str, choices: tuple[str, ...], where: str) -> None:
    if key in values and values[key] not in choices:
        raise _fail(f"{where}.{key}", f"must be one of {', '.join(choices)}, got {quoted(values[key])}")


def _training_recipe(values: dict, where: str) -> Recipe:
    """lab.train.load_recipe on a stage's merged values, its errors renamed to the pipeline's keys."""
    try:
        return load_recipe(values)
    except RecipeError as e:
        key = ".".join(k for k in (where, e.key) if k)
        raise _fail(key or "recipe", e.detail) from None
    except LabError as e:
        raise _fail(where or "recipe", str(e)) from None


def _sections(raw: dict, where: str) -> None:
    """Every training section a stage (or the baseline) gives must be a mapping (its keys are checked later)."""
    for name in SHARED:
        if raw.get(name) is not None and not isinstance(raw[name], dict):
            raise _fail(f"{where}.{name}" if where else name, f"must be a mapping, got {quoted(raw[name])}")


def _merged(shared: dict, own: dict) -> dict:
    return {name: {**(shared.get(name) or {}), **(own.get(name) or {})} for name in SHARED}


def _grow(cfg: ModelConfig, values: Any, seed: int, where: str) -> GrowthPlan:
    options = _options(values, GROW_OPTIONS, where)
    _choice(options, "method", METHODS, where)
    _choice(options, "depth", DEPTH_KINDS, where)
    _choice(options, "map", MAP_KINDS, where)
    _choice(options, "placement", PLACEMENTS, where)
    options.setdefault("seed", seed)
    try:
        return plan_growth(cfg, **options)
    except LabError as e:
        raise _fail(where, str(e)) from None


def _upcycle(cfg: ModelConfig, values: Any, seed: int, where: str) -> tuple[UpcyclePlan, ModelConfig]:
    options = _options(values, UPCYCLE_OPTIONS, where)
    _choice(options, "router_loss_aggregation", ROUTER_LOSS_AGGREGATIONS, where)
    _choice(options, "balance", BALANCES, where)
    options.setdefault("seed", seed)
    plan = UpcyclePlan(**options)
    try:
        return plan, upcycle_config(cfg, plan)
    except LabError as e:
        raise _fail(where, str(e)) from None


def _first_config(recipe: Recipe, where: str) -> ModelConfig:
    if recipe.model is not None:
        return recipe.model
    from lab.checkpoint import read_config

    try:
        cfg, _ = read_config(recipe.init_from)
    except LabError as e:
        raise _fail(f"{where}.init_from", str(e)) from None
    return cfg.replace(dtype="float32")


def _stage(index: int, raw: Any, shared: dict, name: str, seed: int, previous: ModelConfig | None) -> Stage:
    where = f"stages[{index}]"
    raw = _mapping(raw, where, STAGE_KEYS)
    _sections(raw, where)
    if not isinstance(raw.get("name"), str) or not _NAME.match(raw["name"]) or len(raw["name"]) > 100:
        raise _fail(f"{where}.name",
                    f"must be a directory name (letters, digits, '_', '.', '-'), got {quoted(raw.get('name'))}")
    _mapping(raw.get("data"), f"{where}.data", STAGE_DATA_KEYS)
    if "eval_sequences" in (raw.get("train") or {}):
        raise _fail(f"{where}.train.eval_sequences", "set it once for the whole pipeline (top-level train): "
                    "every stage is evaluated on the same windows")
    given = [k for k in ("model", "init_from", "grow", "upcycle") if raw.get(k) is not None]
    allowed = ("model", "init_from") if previous is None else ("grow", "upcycle")
    if len(given) != 1 or given[0] not in allowed:
        what = ("the first stage starts from a model or a checkpoint" if previous is None else
                "every later stage grows or upcycles the previous stage's model")
        raise _fail(where, f"give exactly one of {', '.join(allowed)} ({what}), got {', '.join(given) or 'none'}")
    action = given[0] if given[0] in ("grow", "upcycle") else "train"
    label = raw.get("stage", {"train": "preparation", "grow": "scale-up", "upcycle": "scale-out"}[action])
    if label not in STAGE_KINDS:
        raise _fail(f"{where}.stage", f"must be one of {', '.join(STAGE_KINDS)}, got {quoted(label)}")
    values = {"run": f"{name}-{raw['name']}", "stage": label, "seed": seed, **_merged(shared, raw)}
    if action == "train":
        values.update({k: raw[k] for k in ("model", "init_from") if raw.get(k) is not None})
    else:
        values["init_from"] = PREVIOUS
    recipe = _training_recipe(values, where)
    plan = None
    if action == "train":
        cfg = _first_config(recipe, where)
    elif action == "grow":
        plan = _grow(previous, raw["grow"], seed, f"{where}.grow")
        cfg = plan.target
        if plan.method == "msg" and plan.ramp_steps > recipe.train.max_steps:  # the next stage needs a plain model
            raise _fail(f"{where}.grow.ramp_steps", f"must be <= the stage's train.max_steps "
                        f"({recipe.train.max_steps}), so that its masks fold before it ends, got {plan.ramp_steps}")
    else:
        plan, cfg = _upcycle(previous, raw["upcycle"], seed, f"{where}.upcycle")
    # LLaMA-Pro's training needs blocks that depth growth inserted: refused here, before any stage runs.
    inserted = cfg.n_layers > previous.n_layers if action == "grow" else bool(cfg.extra.get(INSERTED_LAYERS))
    if recipe.train.trainable == "new-blocks" and not inserted:
        raise _fail(f"{where}.train.trainable", "new-blocks trains the blocks depth growth inserted, and this "
                    "stage's model has none (grow it with more layers first, or train all)")
    if recipe.data.seq_len > cfg.max_seq_len:
        raise _fail(f"{where}.data.seq_len", f"must be <= the model's max_seq_len ({cfg.max_seq_len}), "
                    f"got {recipe.data.seq_len}")
    return Stage(index, raw["name"], label, action, recipe, cfg, plan)


def _baseline(raw: Any, shared: dict, name: str, seed: int, final: ModelConfig, flops: float) -> Recipe:
    """The final model's shape from scratch; without train.max_steps, as many steps as match `flops`."""
    raw = _mapping(raw, "baseline", BASELINE_KEYS)
    _sections(raw, "baseline")
    if "name" in raw and (not isinstance(raw["name"], str) or not _NAME.match(raw["name"])):
        raise _fail("baseline.name", f"must be a directory name (letters, digits, '_', '.', '-'), "
                    f"got {quoted(raw['name'])}")
    _mapping(raw.get("data"), "baseline.data", STAGE_DATA_KEYS)
    values = {"run": f"{name}-{raw.get('name', 'baseline')}", "stage": "baseline", "seed": seed,
              "model": final.replace(dtype="float32").to_dict(), **_merged(shared, raw)}
    if "max_steps" not in (raw.get("train") or {}):
        d = {**(shared.get("data") or {}), **(raw.get("data") or {})}
        probe = _training_recipe({**values, "data": d}, "baseline")
        per_step = probe.data.batch_size * probe.data.grad_accum * probe.data.seq_len * flops_per_token(
            final, probe.data.seq_len)
        values["train"] = {**values["train"], "max_steps": max(1, round(flops / per_step))}
    return _training_recipe(values, "baseline")


def read_pipeline_values(source: str | os.PathLike | dict) -> dict:
    if isinstance(source, dict):
        return source
    return read_yaml(source, "pipeline recipe")


def load_pipeline(source: str | os.PathLike | dict | Pipeline) -> Pipeline:
    """A validated Pipeline from a YAML file or a dict: every stage, plan and shape checked, nothing run."""
    if isinstance(source, Pipeline):
        return source
    values = read_pipeline_values(source)
    values = _mapping(values, "recipe", PIPELINE_KEYS)
    name = values.get("pipeline")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _fail("pipeline", f"must name the pipeline (letters, digits, '_', '.', '-'), got {quoted(name)}")
    seed = values.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise _fail("seed", f"must be an integer, got {quoted(seed)}")
    shared = {k: values.get(k) or {} for k in SHARED}
    for key in SHARED:
        if not isinstance(shared[key], dict):
            raise _fail(key, f"must be a mapping, got {quoted(shared[key])}")
    # The shared sections alone first, so that their mistakes are named as top-level keys.
    # (A stand-in model as long as the windows: the stages' own models are checked against them below.)
    seq_len = shared["data"].get("seq_len")
    valid = isinstance(seq_len, int) and not isinstance(seq_len, bool) and seq_len > 0
    stand_in = {"max_seq_len": seq_len} if valid else {}
    _training_recipe({"run": name, "model": stand_in, **shared}, "")
    stages_raw = values.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise _fail("stages", "must be a non-empty list of stages")
    stages: list[Stage] = []
    for i, raw in enumerate(stages_raw):
        stage = _stage(i, raw, shared, name, seed, stages[-1].config if stages else None)
        if any(s.name == stage.name for s in stages):
            raise _fail(f"stages[{i}].name", f"{stage.name!r} is used twice (each stage has its own directory)")
        stages.append(stage)
    baseline = None
    if "baseline" in values:  # `baseline:` alone asks for one with the shared settings
        baseline = _baseline(values.get("baseline"), shared, name, seed, stages[-1].config,
                             sum(s.flops for s in stages))
    return Pipeline(name, seed, tuple(stages), baseline, values)
