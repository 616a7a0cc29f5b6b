"""LLaMA-Pro's block expansion, over seeds: continue a grown model on one domain, training only the new blocks
or everything, and see what each forgets of the other domains.

Wu et al. 2024 ("LLaMA Pro: Progressive LLaMA with Block Expansion", arXiv 2401.02415) insert identity
blocks (copies whose output projections are zero, so the model computes what it computed) after groups of
layers, then continue on a new domain (code and mathematics) training the inserted blocks only: the model
learns the domain while keeping its general abilities, where training every weight forgets them.

Per seed, the source is grown by identity depth growth with `placement: last` to `n_layers` layers (default
half again as many, 8 -> 12; `lab.growth`, config.json's `inserted_layers` names the new blocks) and trained
`steps` steps at `lr` on the training data's `domain` alone (`data.domains`, default code) twice:

    new-blocks  `train.trainable: new-blocks`: the inserted blocks only; embeddings, the source's blocks,
                final norm and LM head frozen (lab.train.trainable)
    all         every parameter

on the same batches. Validation reads every domain.

Per seed s: the data order (identity growth has nothing random in it: both runs start from the same model,
the source's function, on every seed).

Measurements, for new-blocks and all: `<run>/start_loss` (step 0: the source's loss), `<run>/other_loss`
and `<run>/start_other_loss` (the mean validation loss over the domains other than `domain`, after training
and at step 0), `<run>/domain_loss` (the validation loss on `domain` after training).

Time: the grown model is M(12, 128) for the shipped M(8, 128) source. Measured on the shipped source (30
steps a run, one thread, beside two other experiments on this project's 2 cores): 0.70 s a step for all and
0.54 for new-blocks (no weight gradients below the lowest new block), against 1.52 for the `upcycle`
experiment's MoE under the same load, whose 200-step runs took 0.98-1.95 s a step (evaluations included;
data/runs/experiments/seed-0/upcycle). One seed is 300 x (0.70 + 0.54) / 1.52 = 245 of those MoE steps,
4-8 minutes (the six evaluations of the whole validation split are a larger share of these cheaper steps:
count 10 minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.data import DOMAINS
from lab.errors import LabError
from lab.experiments.readings import final_domain_loss, start_domain_loss, start_loss
from lab.experiments.runner import INIT_DIR, TrainRun
from lab.experiments.settings import CommonSettings, non_negative, one_of, positive
from lab.experiments.training import training_recipe

NAME = "llama_pro"
PAPER = "LLaMA Pro, Wu et al. 2024 (arXiv 2401.02415)"
RUNS = {"new-blocks": "new-blocks", "all": "all"}  # run -> train.trainable


@dataclass(frozen=True)
class Settings(CommonSettings):
    # Continued training on `domain`, per run.
    steps: int = field(default=300, metadata=positive())
    # table1's Scale-Up learning rate, for both runs (the paper trains its new blocks at 2e-4, two thirds of
    # LLaMA-2's peak; two thirds of the source's 3e-3 would jolt a converged model on batches a quarter of
    # its own).
    lr: float = field(default=1e-3, metadata=positive())
    warmup_steps: int = field(default=20, metadata=non_negative())
    # The one domain continued training reads (the paper's new domain is code and mathematics).
    domain: str = field(default="code", metadata=one_of(*DOMAINS))
    # Layers after growth (None: the source's plus half of them, at least one more).
    n_layers: int | None = field(default=None, metadata=positive())

    @property
    def other_domains(self) -> tuple[str, ...]:
        return tuple(d for d in DOMAINS if d != self.domain)


def plan_runs(settings: Settings, seed: int, directory: Path) -> list:
    from lab.checkpoint import read_config
    from lab.derive import grow_checkpoint
    from lab.growth import half_again_deeper, plan_growth

    source = settings.path("source")
    cfg, _ = read_config(source)
    n_layers = settings.n_layers or half_again_deeper(cfg.n_layers)
    if n_layers <= cfg.n_layers:
        raise LabError(f"setting n_layers: must be more than the source's {cfg.n_layers} (new blocks to train), "
                       f"got {n_layers}")
    plan = plan_growth(cfg, n_layers=n_layers, depth="identity", placement="last", seed=seed)
    runs = []
    for key, trainable in RUNS.items():
        recipe = training_recipe(settings, run=f"llama-pro-{key}", stage="scale-up", seed=seed, steps=settings.steps,
                                 lr=settings.lr, warmup_steps=settings.warmup_steps,
                                 init_from=directory / INIT_DIR / key, domains=(settings.domain,),
                                 trainable=trainable)
        runs.append(TrainRun(key, recipe, lambda path: grow_checkpoint(source, path, plan)))
    return runs


def measure(settings: Settings, directory: Path) -> dict[str, float]:
    values = {}
    for key in RUNS:
        run = directory / key
        values.update({f"{key}/start_loss": start_loss(run),
                       f"{key}/start_other_loss": start_domain_loss(run, settings.other_domains),
                       f"{key}/other_loss": final_domain_loss(run, settings.other_domains),
                       f"{key}/domain_loss": final_domain_loss(run, (settings.domain,))})
    return values
