"""Aux-loss-free load balancing against the load-balancing loss, over seeds, on one upcycled MoE.

Wang et al. 2024 ("Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts", arXiv 2408.15664)
and DeepSeek-V3 (arXiv 2412.19437, 2.1.2) replace the load-balancing loss by a per-expert bias that only
chooses the experts and moves by a fixed rate against each expert's load after every step (lab.moe,
lab.train.balance). They report a more even load than the loss gives, at a language-modelling loss no
worse: no balancing gradient competes with the LM gradient.

Per seed, the source is upcycled as the `upcycle` experiment upcycles it (AquilaMoE's recipe: n_experts,
top_k, top-k then softmax, routers ~ Normal(0, router_init_std), z-loss x z_loss_coef, router losses
summed over layers) and trained `steps` steps at `lr` twice, differing only in how the load is balanced:

    aux-loss    the load-balancing loss x aux_loss_coef (AquilaMoE 2.2.2), as the upcycle experiment's
                topk-softmax run
    aux-free    no load-balancing loss; the expert biases move by balance_bias_rate x sign(mean load - load)
                after every step (DeepSeek-V3's 0.001)

Both start from the same weights (the same seed gives the same router rows; the upcycled checkpoints
differ only in config.json's `balance`, so they are made one per run) and read the same batches.

Per seed s: the routers' initial rows and the data order.

Measurements: `<run>/start_loss`, `<run>/trained_loss` (mean validation LM loss over the domains; neither
run adds its balancing to it) and `<run>/load_cv`, the coefficient of variation of tokens per expert over
the last quarter of training (lab.experiments.readings.load_cv, C13's reading), for aux-loss and aux-free.

Time: 400 steps per run, twice C13's 200, so that the biases (0.001 a step, against routing
probabilities near 1/8) have room to settle. The upcycled MoE's 200-step runs of the `upcycle`
experiment took 196-389 s each (0.98-1.95 s a step, evaluations included) on this project's 2-core
machine, one thread per experiment, two experiments at once (data/runs/experiments/seed-0/upcycle).
Measured here on the shipped source under that load (30 steps a run, one thread): 1.52 s a step for
aux-loss (the upcycle experiment's topk-softmax run) and 1.72 for aux-free. One seed is 400 x (1.52 +
1.72) / 1.52 = 853 of the upcycle experiment's MoE steps, 14-28 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError
from lab.experiments.readings import final_loss, load_cv, start_loss
from lab.experiments.runner import INIT_DIR, TrainRun
from lab.experiments.settings import CommonSettings, non_negative, one_of, positive
from lab.experiments.training import training_recipe

NAME = "balance"
PAPER = "DeepSeek-V3 (arXiv 2412.19437) 2.1.2; Wang et al. 2024 (arXiv 2408.15664)"
RUNS = {"aux-loss": "aux_loss", "aux-free": "aux_free"}  # run -> ModelConfig.balance


@dataclass(frozen=True)
class Settings(CommonSettings):
    # Training steps per run: twice the upcycle experiment's (C13's), for the biases to settle.
    steps: int = field(default=400, metadata=positive())
    # The upcycle experiment's: the source's final learning rate.
    lr: float = field(default=3e-4, metadata=positive())
    warmup_steps: int = field(default=20, metadata=non_negative())
    n_experts: int = field(default=8, metadata=positive())
    top_k: int = field(default=2, metadata=positive())
    router_init_std: float = field(default=0.02, metadata=positive())
    # AquilaMoE's coefficients (2.2.2), summed over layers (Megatron-Core's convention), as in `upcycle`.
    aux_loss_coef: float = field(default=0.001, metadata=positive())
    z_loss_coef: float = field(default=0.01, metadata=non_negative())
    router_loss_aggregation: str = field(default="sum", metadata=one_of("sum", "mean"))
    # DeepSeek-V3's bias update speed (gamma = 0.001 for most of its pretraining).
    balance_bias_rate: float = field(default=0.001, metadata=positive())

    def check(self) -> None:
        if self.top_k > self.n_experts:
            raise LabError(f"setting top_k: must be <= n_experts ({self.n_experts}), got {self.top_k}")


def plans(settings: Settings, seed: int) -> dict:
    """The UpcyclePlan of each run: the same plan but for `balance`."""
    from lab.upcycle import UpcyclePlan

    return {run: UpcyclePlan(n_experts=settings.n_experts, top_k=settings.top_k,
                             router_init_std=settings.router_init_std, aux_loss_coef=settings.aux_loss_coef,
                             z_loss_coef=settings.z_loss_coef, router_loss_aggregation=settings.router_loss_aggregation,
                             balance=balance, balance_bias_rate=settings.balance_bias_rate, seed=seed)
            for run, balance in RUNS.items()}


def plan_runs(settings: Settings, seed: int, directory: Path) -> list:
    from lab.checkpoint import read_config
    from lab.derive import upcycle_checkpoint
    from lab.upcycle import upcycle_config

    source = settings.path("source")
    cfg, _ = read_config(source)
    runs = []
    for key, plan in plans(settings, seed).items():
        upcycle_config(cfg, plan)  # checked before any work
        # Logged every step: the load's coefficient of variation sums the last quarter's steps.
        recipe = training_recipe(settings, run=f"balance-{key}", stage="scale-out", seed=seed, steps=settings.steps,
                                 lr=settings.lr, warmup_steps=settings.warmup_steps,
                                 init_from=directory / INIT_DIR / key, log_every=1)
        runs.append(TrainRun(key, recipe, lambda path, plan=plan: upcycle_checkpoint(source, path, plan)))
    return runs


def measure(settings: Settings, directory: Path) -> dict[str, float]:
    values = {}
    for key in RUNS:
        run = directory / key
        values.update({f"{key}/start_loss": start_loss(run), f"{key}/trained_loss": final_loss(run),
                       f"{key}/load_cv": load_cv(run)})
    return values
