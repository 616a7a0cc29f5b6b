"""Upcycling choices of He et al. 2024 ("Upcycling Large Language Models into Mixture of Experts",
arXiv 2410.07524), over seeds, from one dense source.

He et al. find that an upcycled MoE trained on beats the dense model trained on for the same compute;
that softmax-then-top-k routing (no renormalisation, down projections scaled by E/k) beats Mixtral's
top-k-then-softmax; that finer granularity (experts cut into virtual groups, with weight scaling) helps;
and, with everyone since Switch Transformers, that without a load-balancing loss the routers collapse
onto few experts. AquilaMoE (arXiv 2408.06567, 2.2.2) upcycles with top-k-then-softmax, 8 experts top-2,
load-balancing loss x 0.001 and z-loss x 0.01, each MoE layer adding its own (summed over layers, as
Megatron-Core does: `router_loss_aggregation` "sum", the default here).

Runs per seed, all from the source and trained for `steps` steps at `lr` except where said:

    dense            the source trained on as a dense model for as many steps as give the MoE's training
                     FLOPs (lab.flops: an upcycled top-2 MoE spends more per token than its dense source)
    topk-softmax     n_experts, top_k, top-k then softmax: the upcycled model computes the dense one exactly
    softmax-topk     the same with softmax then top-k (weights not renormalised, down projections x E/k)
    granularity-2    n_experts x G experts, top_k x G, each a 1/G slice in virtual groups (G = granularity)
    no-aux-loss      topk-softmax without the load-balancing loss
    no-z-loss        topk-softmax without the router z-loss

Per seed s: the routers' initial rows (lab.upcycle's seeded generators) and the data order of every run.

Measurements: `<run>/start_loss` (before the first step), `<run>/trained_loss`, `<run>/flops`, and for the
MoE runs `<run>/load_cv`, the coefficient of variation of tokens per expert over the last quarter of
training (lab.experiments.readings.load_cv).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.experiments.readings import final_flops, final_loss, load_cv, start_loss
from lab.experiments.runner import INIT_DIR, TrainRun
from lab.experiments.settings import CommonSettings, non_negative, one_of, positive, rule
from lab.experiments.training import training_recipe

NAME = "upcycle"
PAPER = "He et al. 2024 (arXiv 2410.07524); AquilaMoE (arXiv 2408.06567) 2.2.2"
MOE_RUNS = ("topk-softmax", "softmax-topk", "granularity-2", "no-aux-loss", "no-z-loss")


@dataclass(frozen=True)
class Settings(CommonSettings):
    # MoE training steps per variant; long enough for the load without balancing loss to drift visibly.
    steps: int = field(default=200, metadata=positive())
    # The source's final learning rate (its peak 3e-3 decayed to a tenth). The paper's ratio for upcycling,
    # 2.2e-4 / 1.2e-3 of the dense peak (AquilaMoE Table 3), gives 5.5e-4 here: measured over 200 steps, that
    # re-warming lifts the dense model from 3.594 to 3.67 and it ends at 3.624, above where it started (the
    # paper recovers over 400B tokens; 200 steps here are 410k).
    lr: float = field(default=3e-4, metadata=positive())
    warmup_steps: int = field(default=20, metadata=non_negative())
    n_experts: int = field(default=8, metadata=positive())
    top_k: int = field(default=2, metadata=positive())
    granularity: int = field(default=2, metadata=rule(lambda v: v >= 2, "must be >= 2"))
    router_init_std: float = field(default=0.02, metadata=positive())
    aux_loss_coef: float = field(default=0.001, metadata=rule(lambda v: v > 0, "must be > 0 (no-aux-loss is a run)"))
    z_loss_coef: float = field(default=0.01, metadata=rule(lambda v: v > 0, "must be > 0 (no-z-loss is a run)"))
    # The paper's convention (Megatron-Core): every MoE layer adds its own auxiliary losses (lab.moe).
    router_loss_aggregation: str = field(default="sum", metadata=one_of("sum", "mean"))


def plans(settings: Settings, seed: int) -> dict:
    """The UpcyclePlan of every MoE run."""
    from lab.upcycle import UpcyclePlan

    base = dict(n_experts=settings.n_experts, top_k=settings.top_k, router_init_std=settings.router_init_std,
                aux_loss_coef=settings.aux_loss_coef, z_loss_coef=settings.z_loss_coef,
                router_loss_aggregation=settings.router_loss_aggregation, seed=seed)
    g = settings.granularity
    return {"topk-softmax": UpcyclePlan(**base),
            "softmax-topk": UpcyclePlan(**base, routing="softmax_topk"),
            "granularity-2": UpcyclePlan(**{**base, "n_experts": settings.n_experts * g, "top_k": settings.top_k * g},
                                         granularity=g),
            "no-aux-loss": UpcyclePlan(**{**base, "aux_loss_coef": 0.0}),
            "no-z-loss": UpcyclePlan(**{**base, "z_loss_coef": 0.0})}


def dense_steps(settings: Settings, cfg, moe_cfg) -> int:
    """Dense steps that spend the training FLOPs of `settings.steps` MoE steps (same batch and tokens per step)."""
    from lab.flops import flops_per_token

    ratio = flops_per_token(moe_cfg, settings.seq_len) / flops_per_token(cfg, settings.seq_len)
    return max(1, round(settings.steps * ratio))


def plan_runs(settings: Settings, seed: int, directory: Path) -> list:
    from lab.checkpoint import read_config
    from lab.upcycle import upcycle_config
    from lab.derive import upcycle_checkpoint

    source = settings.path("source")
    cfg, _ = read_config(source)
    moe_plans = plans(settings, seed)
    for plan in moe_plans.values():
        upcycle_config(cfg, plan)  # every plan checked before any work
    common = dict(seed=seed, lr=settings.lr, warmup_steps=settings.warmup_steps)
    steps = dense_steps(settings, cfg, upcycle_config(cfg, moe_plans["topk-softmax"]))
    runs: list = [TrainRun("dense", training_recipe(settings, run="upcycle-dense", stage="dense", init_from=source,
                                                    steps=steps, **common))]
    for key, plan in moe_plans.items():
        # Logged every step: the load's coefficient of variation sums the last quarter's steps.
        recipe = training_recipe(settings, run=f"upcycle-{key}", stage="scale-out", steps=settings.steps,
                                 init_from=directory / INIT_DIR / key, log_every=1, **common)
        runs.append(TrainRun(key, recipe, lambda path, plan=plan: upcycle_checkpoint(source, path, plan)))
    return runs


def measure(settings: Settings, directory: Path) -> dict[str, float]:
    values = {}
    for key in ("dense",) + MOE_RUNS:
        run = directory / key
        values.update({f"{key}/start_loss": start_loss(run), f"{key}/trained_loss": final_loss(run),
                       f"{key}/flops": final_flops(run)})
        if key != "dense":
            values[f"{key}/load_cv"] = load_cv(run)
    return values
