"""Table 1 and Figure 3 of AquilaMoE (arXiv 2408.06567), over seeds: every growth method from one source.

The paper grows M(24, 2048) (validation loss 2.97) to M(32, 4096): width-only FPI M(24, 4096) keeps 2.97
exactly; FPI + stacking 4.30, FPI + interpolation 3.31, AKI + stacking 9.56, AKI-Pro (interpolation) 7.81,
random initialisation 12.22 (Table 1). After continued training, AKI overtakes FPI (Figure 3, as in
bert2BERT), and every grown model stays below the same shape trained from scratch.

Here the source is grown to twice its hidden size, heads and intermediate size and `n_layers` layers
(default 1.5 times its own), by each method (`lab.experiments.growth_table1.rows_to_grow`), evaluated
right after growth (the step-0 evaluation of its training run) and after `steps` steps of continued
training at `lr` for the rows in `trained_rows` (the others are evaluated right after growth only: on
two CPU cores a grown model's step costs about 3 s, and no claim reads their trained loss). The random
row is the deep target trained from scratch for the same steps at `scratch_lr` (a from-scratch run's own
learning rate, not the grown models' lower one). The source itself is evaluated on the same windows.

Per seed s: growth maps and noise (random only with `map: random` or `noise` > 0; FPI with the cyclic map
has none), the random initialisation and the data order of every run.

Measurements: `source/loss`; `<row>/grown_loss` for fpi-width, fpi-stack, fpi-interpolate, aki-stack,
aki-pro and random, `<row>/trained_loss` for the trained rows and random; `worst-growth/grown_loss` (the
highest of the four rows that reach the deep target).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.experiments.readings import final_loss, start_loss
from lab.experiments.runner import INIT_DIR, EvalRun, TrainRun
from lab.experiments.settings import CommonSettings, non_negative, one_of, positive
from lab.experiments.training import training_recipe

NAME = "table1"
PAPER = "AquilaMoE (arXiv 2408.06567) Table 1 and Figure 3"
GROWN_ROWS = ("fpi-width", "fpi-stack", "fpi-interpolate", "aki-stack", "aki-pro")
DEEP_ROWS = ("fpi-stack", "fpi-interpolate", "aki-stack", "aki-pro")  # the rows that reach the random row's shape


@dataclass(frozen=True)
class Settings(CommonSettings):
    # Continued training after growth, per trained row (409,600 tokens at the default batch).
    steps: int = field(default=200, metadata=positive())
    # The source's peak learning rate (3e-3) times the paper's ratio for Scale-Up, 4e-4 / 1.2e-3 (AquilaMoE
    # Table 3: 16B against 7B).
    lr: float = field(default=1e-3, metadata=positive())
    scratch_lr: float = field(default=3e-3, metadata=positive())
    warmup_steps: int = field(default=20, metadata=non_negative())
    # The grown rows trained on after growth: the two that C5 compares (the random row always trains).
    trained_rows: tuple[str, ...] = field(default=("fpi-interpolate", "aki-pro"), metadata=one_of(*GROWN_ROWS))
    # Layers of the deep target (None: the source's plus half of them, at least one more).
    n_layers: int | None = field(default=None, metadata=positive())
    map: str = field(default="cyclic", metadata=one_of("cyclic", "random"))
    noise: float = field(default=0.0, metadata=non_negative())


def growth_requests(settings: Settings, cfg) -> list[tuple[str, dict]]:
    """(row, plan_growth arguments) of the five grown rows."""
    from lab.experiments.growth_table1 import rows_to_grow
    from lab.growth import half_again_deeper

    n_layers = settings.n_layers or half_again_deeper(cfg.n_layers)
    return [(key, request) for key, _, request in rows_to_grow(cfg, n_layers)]


def plan_runs(settings: Settings, seed: int, directory: Path) -> list:
    from lab.checkpoint import read_config
    from lab.growth import plan_growth
    from lab.derive import grow_checkpoint

    source = settings.path("source")
    cfg, _ = read_config(source)
    common = dict(seed=seed, steps=settings.steps, warmup_steps=settings.warmup_steps)
    runs: list = [EvalRun("source", training_recipe(settings, run="table1-source", stage="source", init_from=source,
                                                    lr=settings.lr, **common))]
    target = None
    for key, request in growth_requests(settings, cfg):
        plan = plan_growth(cfg, map=settings.map, noise=settings.noise, seed=seed, **request)
        target = plan.target if key in DEEP_ROWS else target
        recipe = training_recipe(settings, run=f"table1-{key}", stage="scale-up", lr=settings.lr,
                                 init_from=directory / INIT_DIR / key, **common)
        kind = TrainRun if key in settings.trained_rows else EvalRun
        runs.append(kind(key, recipe, lambda path, plan=plan: grow_checkpoint(source, path, plan)))
    runs.append(TrainRun("random", training_recipe(settings, run="table1-random", stage="pretrain", model=target,
                                                   lr=settings.scratch_lr, **common)))
    return runs


def measure(settings: Settings, directory: Path) -> dict[str, float]:
    values = {"source/loss": start_loss(directory / "source")}
    for key in GROWN_ROWS + ("random",):
        values[f"{key}/grown_loss"] = start_loss(directory / key)
        if key in settings.trained_rows or key == "random":
            values[f"{key}/trained_loss"] = final_loss(directory / key)
    values["worst-growth/grown_loss"] = max(values[f"{key}/grown_loss"] for key in DEEP_ROWS)
    return values
