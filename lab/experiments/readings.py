"""The scalars an experiment measures, read from its runs' metrics (lab.runs), never from weights.

Every value is the mean over domains of the validation loss on the run's fixed windows (`val_loss_mean`
of an `eval` record), or over some of its domains (`val_loss`, per domain), or computed from `train`
records: the expert load's coefficient of variation, the training FLOPs. A run directory that lacks what
is asked for raises one LabError naming it, so a measurement is never silently a default.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from lab.errors import LabError
from lab.runs import METRICS_FILE, load_run


def _records(run_dir: Path, event: str) -> list[dict]:
    run = load_run(run_dir)
    if not run.metrics.records:
        raise LabError(f"{Path(run_dir) / METRICS_FILE}: no records")
    return run.events(event)


def evaluations(run_dir: Path) -> list[dict]:
    """The run's eval records that carry a mean validation loss, in step order."""
    found = [r for r in _records(run_dir, "eval") if isinstance(r.get("val_loss_mean"), (int, float))]
    if not found:
        raise LabError(f"{run_dir}: no evaluation with val_loss_mean")
    return sorted(found, key=lambda r: r.get("step", 0))


def start_loss(run_dir: Path) -> float:
    """The loss before the first step: right after growth or upcycling for a run that starts from one."""
    first = evaluations(run_dir)[0]
    if first.get("step", 0) != 0:
        raise LabError(f"{run_dir}: no evaluation at step 0")
    return float(first["val_loss_mean"])


def final_loss(run_dir: Path) -> float:
    return float(evaluations(run_dir)[-1]["val_loss_mean"])


def _domain_loss(run_dir: Path, record: dict, domains) -> float:
    losses = record.get("val_loss") or {}
    missing = [d for d in domains if not isinstance(losses.get(d), (int, float))]
    if not domains or missing:
        raise LabError(f"{run_dir}: the evaluation at step {record.get('step')} has no validation loss for "
                       f"{', '.join(missing or ['any domain'])}")
    return statistics.fmean(float(losses[d]) for d in domains)


def start_domain_loss(run_dir: Path, domains) -> float:
    """The mean over `domains` of the per-domain validation loss before the first step."""
    first = evaluations(run_dir)[0]
    if first.get("step", 0) != 0:
        raise LabError(f"{run_dir}: no evaluation at step 0")
    return _domain_loss(run_dir, first, domains)


def final_domain_loss(run_dir: Path, domains) -> float:
    """The mean over `domains` of the last evaluation's per-domain validation loss (what a run trained on
    one domain forgets of the others, or how well it learnt its own)."""
    return _domain_loss(run_dir, evaluations(run_dir)[-1], domains)


def final_flops(run_dir: Path) -> float:
    """Training FLOPs the run spent (lab.flops: 6N + attention per token, the active parameters of an MoE)."""
    return float(max((r.get("flops") or 0.0) for r in load_run(run_dir).metrics.records))


def coefficient_of_variation(counts: list[float]) -> float:
    """Population std / mean of the tokens each expert received: 0 at perfect balance."""
    mean = statistics.fmean(counts)
    return statistics.pstdev(counts) / mean if mean > 0 else math.inf


def load_cv(run_dir: Path, last_fraction: float = 0.25) -> float:
    """How unbalanced the routers are at the end of training: the tokens per expert of each MoE layer summed
    over the logged train steps of the run's last `last_fraction`, their coefficient of variation per
    layer, averaged over the layers. Summing over steps keeps the batch-to-batch noise out, so what is
    left is the load the routers settled on."""
    train = [r for r in _records(run_dir, "train") if r.get("tokens_per_expert")]
    if not train:
        raise LabError(f"{run_dir}: no train record with tokens_per_expert (not an MoE run?)")
    last_step = max(r["step"] for r in train)
    window = [r for r in train if r["step"] > last_step * (1 - last_fraction)] or train[-1:]
    n_layers = len(window[0]["tokens_per_expert"])
    totals = [[sum(r["tokens_per_expert"][layer][e] for r in window)
               for e in range(len(window[0]["tokens_per_expert"][layer]))] for layer in range(n_layers)]
    return statistics.fmean(coefficient_of_variation(layer) for layer in totals)


def stage_recovery(pipeline_dir: Path) -> list[dict]:
    """Per transition of a pipeline run (lab.pipeline.merge): its kind, the loss just before, right after,
    and at a quarter of the new stage's steps (the first evaluation at or after ceil(steps / 4))."""
    run = load_run(pipeline_dir)
    stages = {s.get("name"): s for s in run.meta.get("stages", []) if isinstance(s, dict)}
    out = []
    for t in run.events("transition"):
        name = t.get("stage_name")
        steps = (stages.get(name) or {}).get("max_steps")
        if not isinstance(steps, int) or t.get("val_loss_mean_before") is None:
            raise LabError(f"{pipeline_dir}: transition into {name!r} lacks its steps or the loss before it")
        quarter = math.ceil(steps / 4)
        evals = [r for r in run.events("eval") if r.get("stage_name") == name
                 and r.get("stage_step", 0) >= quarter and r.get("val_loss_mean") is not None]
        if not evals:
            raise LabError(f"{pipeline_dir}: stage {name!r} has no evaluation at or after step {quarter}")
        at = min(evals, key=lambda r: r["stage_step"])
        out.append({"kind": t.get("kind"), "stage": name, "before_loss": float(t["val_loss_mean_before"]),
                    "after_loss": float(t["val_loss_mean"]), "quarter_loss": float(at["val_loss_mean"]),
                    "quarter_step": at["stage_step"]})
    return out
