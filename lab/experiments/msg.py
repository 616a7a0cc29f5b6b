"""Masked structural growth against FPI, over seeds: the same width growth of one source, two ways.

Yao et al. 2024 ("Masked Structural Growth for 2x Faster Language Model Pre-training", ICLR 2024, arXiv
2305.02869) grow a model with new units of any weights whose contribution is multiplied by a mask that
ramps from 0 to 1 over some steps (lab.growth.msg, lab.msg_masks). At mask 0 the grown model computes the
source's function whatever the new weights are, and since the new units are not copies of old ones they do
not start symmetric, the weakness of FPI's copies (bert2BERT's reason for AKI and noise); the paper finds
MSG ahead of function-preserving growth by copying after equal training.

Per seed, the source is grown to the shape of the `table1` experiment's width growth (twice the hidden size,
heads and intermediate size, the same depth: `lab.experiments.growth_table1.rows_to_grow`'s fpi-width) by

    fpi     FPI with the cyclic map and no noise (exact: an integer width ratio)
    msg     MSG, its masks ramping over `ramp_steps` training steps (default: a quarter of `steps`)

and both are trained `steps` steps at `lr` (table1's Scale-Up learning rate) on the same batches. The source
is evaluated on the same windows.

Per seed s: MSG's new weights (drawn as a fresh model's, seeded by (s, tensor name)) and the data order. FPI
with the cyclic map has nothing random in it: its grown loss is the same on every seed.

Measurements: `source/loss`; `<run>/grown_loss` (the step-0 evaluation of its training run: MSG's masks at
0) and `<run>/trained_loss` for fpi and msg.

Time: the grown model is M(8, 256) for the shipped M(8, 128) source. Measured on the shipped source (30
steps a run, one thread, beside two other experiments on this project's 2 cores): 3.27 s a step for fpi and
2.18 for msg (the masks cost a few elementwise products a layer, during the ramp only; the gap is the
machine's load), against 1.52 for the `upcycle` experiment's MoE under the same load, whose 200-step runs
took 0.98-1.95 s a step (evaluations included; data/runs/experiments/seed-0/upcycle). One seed is
200 x (3.27 + 2.18) / 1.52 = 717 of those MoE steps, 12-23 minutes, plus the source's evaluation (seconds);
`table1`'s grown M(12, 256) at 3.3-5.6 s a step gives the same at two thirds of its layers (15-25 minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError
from lab.experiments.readings import final_loss, start_loss
from lab.experiments.runner import INIT_DIR, EvalRun, TrainRun
from lab.experiments.settings import CommonSettings, non_negative, positive
from lab.experiments.training import training_recipe

NAME = "msg"
PAPER = "Yao et al. 2024, Masked Structural Growth (ICLR 2024, arXiv 2305.02869)"
RUNS = ("fpi", "msg")


@dataclass(frozen=True)
class Settings(CommonSettings):
    # Continued training after growth, per run: table1's.
    steps: int = field(default=200, metadata=positive())
    # table1's: the source's peak learning rate times AquilaMoE's Scale-Up ratio (4e-4 / 1.2e-3).
    lr: float = field(default=1e-3, metadata=positive())
    warmup_steps: int = field(default=20, metadata=non_negative())
    # Steps over which MSG's masks ramp from 0 to 1 (None: a quarter of `steps`); at most `steps`, so that
    # the trained model is plain (the masks fold at the ramp's end).
    ramp_steps: int | None = field(default=None, metadata=positive())

    def check(self) -> None:
        if self.ramp_steps is not None and self.ramp_steps > self.steps:
            raise LabError(f"setting ramp_steps: must be <= steps ({self.steps}), so that the masks fold before "
                           f"the end, got {self.ramp_steps}")

    @property
    def ramp(self) -> int:
        return self.ramp_steps if self.ramp_steps is not None else max(1, self.steps // 4)


def growth_request(cfg) -> dict:
    """plan_growth's size arguments of table1's width-only row (2x hidden size, heads, intermediate size)."""
    from lab.experiments.growth_table1 import rows_to_grow

    request = dict(next(request for key, _, request in rows_to_grow(cfg, cfg.n_layers) if key == "fpi-width"))
    request.pop("method")
    return request


def plans(settings: Settings, cfg, seed: int) -> dict:
    from lab.growth import plan_growth

    request = growth_request(cfg)
    return {"fpi": plan_growth(cfg, method="fpi", seed=seed, **request),
            "msg": plan_growth(cfg, method="msg", ramp_steps=settings.ramp, seed=seed, **request)}


def plan_runs(settings: Settings, seed: int, directory: Path) -> list:
    from lab.checkpoint import read_config
    from lab.derive import grow_checkpoint

    source = settings.path("source")
    cfg, _ = read_config(source)
    common = dict(seed=seed, steps=settings.steps, lr=settings.lr, warmup_steps=settings.warmup_steps)
    runs: list = [EvalRun("source", training_recipe(settings, run="msg-source", stage="source", init_from=source,
                                                    **common))]
    for key, plan in plans(settings, cfg, seed).items():
        recipe = training_recipe(settings, run=f"msg-{key}", stage="scale-up", init_from=directory / INIT_DIR / key,
                                 **common)
        runs.append(TrainRun(key, recipe, lambda path, plan=plan: grow_checkpoint(source, path, plan)))
    return runs


def measure(settings: Settings, directory: Path) -> dict[str, float]:
    values = {"source/loss": start_loss(directory / "source")}
    for key in RUNS:
        values.update({f"{key}/grown_loss": start_loss(directory / key),
                       f"{key}/trained_loss": final_loss(directory / key)})
    return values
