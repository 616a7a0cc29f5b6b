"""Table 2 of AquilaMoE (arXiv 2408.06567), over seeds: width then depth, and what each costs right after growth.

The paper grows AquilaDense-7B M(32, 4096) (validation loss 1.85) by FPI: to M(32, 8192), an integer
width ratio, the loss stays 1.85; to M(32, 5120), a non-integer ratio (1.25), it rises to 1.96 (RMSNorm
no longer sees every unit the same number of times); adding depth, M(40, 5120), raises it to 2.24.

Here the source is grown three ways by `method` (FPI, the paper's row): `width-integer` (hidden size,
heads and intermediate size times `integer_ratio`), `width-noninteger` (times `noninteger_ratio`, heads
rounded so that head_dim is kept and the kv groups still divide them) and `width-depth` (the non-integer
width and `depth_ratio` times the layers, ordered by `depth`). Each is evaluated right after growth; with
`steps` > 0 each is also trained on for that many steps at `lr`. The source is evaluated on the same
windows.

Per seed s: growth maps and noise (with `map: random` or `noise` > 0; the paper's FPI with the cyclic map
is deterministic, so every seed then measures the same numbers right after growth) and the data order of
any continued training.

Measurements: `source/loss`; `<row>/grown_loss` (and `<row>/trained_loss` when `steps` > 0) for
width-integer, width-noninteger and width-depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError
from lab.experiments.readings import final_loss, start_loss
from lab.experiments.runner import INIT_DIR, EvalRun, TrainRun
from lab.experiments.settings import CommonSettings, non_negative, one_of, positive, rule
from lab.experiments.training import training_recipe

NAME = "table2"
PAPER = "AquilaMoE (arXiv 2408.06567) Table 2"
ROWS = ("width-integer", "width-noninteger", "width-depth")


@dataclass(frozen=True)
class Settings(CommonSettings):
    method: str = field(default="fpi", metadata=one_of("fpi", "aki", "aki-pro"))
    integer_ratio: int = field(default=2, metadata=rule(lambda v: v >= 2, "must be >= 2"))
    noninteger_ratio: float = field(default=1.5, metadata=rule(lambda v: v > 1 and v != int(v),
                                                                "must be > 1 and not an integer"))
    depth_ratio: float = field(default=1.25, metadata=rule(lambda v: v > 1, "must be > 1"))
    depth: str = field(default="interpolate", metadata=one_of("stack", "interpolate"))
    map: str = field(default="cyclic", metadata=one_of("cyclic", "random"))
    noise: float = field(default=0.0, metadata=non_negative())
    # Continued training after growth (0: evaluate right after growth only, which is all Table 2 reports).
    steps: int = field(default=0, metadata=non_negative())
    lr: float = field(default=1e-3, metadata=positive())
    warmup_steps: int = field(default=20, metadata=non_negative())


def widened(cfg, ratio: float) -> dict:
    """Hidden size, heads and intermediate size grown by about `ratio`: heads keep their head_dim, and
    under GQA their number stays a multiple of the kv groups (q heads grow inside each group)."""
    groups = cfg.n_kv_heads if cfg.n_kv_heads != cfg.n_heads else 1  # an MHA source grows its kv heads too
    n_heads = max(cfg.n_heads + groups, round(cfg.n_heads * ratio / groups) * groups)
    head_shaped = cfg.dim == cfg.n_heads * cfg.head_dim
    dim = n_heads * cfg.head_dim if head_shaped else round(cfg.dim * ratio)
    if (dim % cfg.dim == 0) != (ratio == int(ratio)):
        raise LabError(f"ratio {ratio}: with {cfg.n_heads} heads in {groups} kv groups the nearest width is "
                       f"{dim} = {dim / cfg.dim:g} x {cfg.dim}; choose another ratio")
    return {"dim": dim, "n_heads": n_heads, "ffn_dim": math.ceil(cfg.ffn_dim * dim / cfg.dim)}


def growth_requests(settings: Settings, cfg) -> list[tuple[str, dict]]:
    shared = {"method": settings.method, "map": settings.map, "noise": settings.noise}
    wide = widened(cfg, settings.noninteger_ratio)
    n_layers = max(cfg.n_layers + 1, round(cfg.n_layers * settings.depth_ratio))
    return [("width-integer", {**shared, **widened(cfg, settings.integer_ratio)}),
            ("width-noninteger", {**shared, **wide}),
            ("width-depth", {**shared, **wide, "n_layers": n_layers, "depth": settings.depth})]


def plan_runs(settings: Settings, seed: int, directory: Path) -> list:
    from lab.checkpoint import read_config
    from lab.growth import plan_growth
    from lab.derive import grow_checkpoint

    source = settings.path("source")
    cfg, _ = read_config(source)
    steps = max(1, settings.steps)  # an evaluation's recipe still names a (never taken) step
    common = dict(seed=seed, steps=steps, lr=settings.lr, warmup_steps=settings.warmup_steps)
    runs: list = [EvalRun("source", training_recipe(settings, run="table2-source", stage="source", init_from=source,
                                                    **common))]
    for key, request in growth_requests(settings, cfg):
        plan = plan_growth(cfg, seed=seed, **request)
        recipe = training_recipe(settings, run=f"table2-{key}", stage="scale-up", init_from=directory / INIT_DIR / key,
                                 **common)
        make = (lambda path, plan=plan: grow_checkpoint(source, path, plan))
        runs.append(TrainRun(key, recipe, make) if settings.steps > 0 else EvalRun(key, recipe, make))
    return runs


def measure(settings: Settings, directory: Path) -> dict[str, float]:
    values = {"source/loss": start_loss(directory / "source")}
    for key in ROWS:
        values[f"{key}/grown_loss"] = start_loss(directory / key)
        if settings.steps > 0:
            values[f"{key}/trained_loss"] = final_loss(directory / key)
    return values
