"""The reference runs shipped in `data/runs/`: what the dashboard and the notebooks show on first launch.

Only each run's `meta.json` (with a `description` key added) and `metrics.jsonl` are kept, never
weights. The layout, which readers group by its first path component:

    efficientscale-tiny/            the tiny pipeline's merged metrics (Preparation -> Scale-Up -> Scale-Out)
    efficientscale-tiny-baseline/   the final MoE shape trained from scratch on the same FLOPs
    growth/<method>/                paper Table 1 at toy scale: the source, then the grown model of each
                                    method (fpi-width, fpi-stack, fpi-interpolate, aki-stack, aki-pro,
                                    identity, random) continued with the tiny recipe at the Scale-Up
                                    learning rate; step 0 of each is the loss right after growth
    routing/<variant>/              short MoE trainings upcycled from the same dense source: topk-softmax,
                                    softmax-topk, no-aux-loss, no-z-loss, granularity-2

    python -m lab.experiments.reference_runs --out data/runs            # everything
    python -m lab.experiments.reference_runs --out data/runs --only growth routing
    python -m lab.experiments.reference_runs --out data/runs --check    # the layout is complete and readable

The weights of every run stay in `--work` (default runs/reference), which a later call reuses for
nothing: each part starts over. The step counts are small so that everything regenerates in a quarter
of an hour on 2 CPU cores; on a machine shared with other work, OMP_NUM_THREADS=1 is much faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from lab.run_export import export_run
from lab.runs import META_FILE, METRICS_FILE, find_runs, load_run
from lab import paths

ROOT = paths.ROOT
TINY = ROOT / "recipes" / "tiny.yaml"
TINY_MOE = ROOT / "recipes" / "tiny-moe.yaml"
PIPELINE = ROOT / "recipes" / "efficientscale-tiny.yaml"
PARTS = ("pipeline", "growth", "routing")

GROWTH_LR = 1e-3  # continued training after growth (recipes/efficientscale-tiny.yaml's Scale-Up)
ROUTING_LR = 1e-3
GROWTH_KEYS = ("source", "fpi-width", "fpi-stack", "fpi-interpolate", "aki-stack", "aki-pro", "identity", "random")
# variant -> (UpcyclePlan options, what it shows)
ROUTING_VARIANTS: dict[str, tuple[dict, str]] = {
    "topk-softmax": ({}, "top-k then softmax (Mixtral; the upcycled model starts equal to the dense one)"),
    "softmax-topk": ({"routing": "softmax_topk"},
                     "softmax then top-k, weights not renormalised, down projections scaled by E/k (He et al. 2024)"),
    "no-aux-loss": ({"aux_loss_coef": 0.0}, "top-k then softmax without the load-balancing loss"),
    "no-z-loss": ({"z_loss_coef": 0.0}, "top-k then softmax without the router z-loss"),
    "granularity-2": ({"n_experts": 16, "top_k": 4, "granularity": 2},
                      "16 half-size experts in 8 virtual groups of 2, top-4 (He et al. 2024): same active compute"),
}


def expected_runs() -> list[str]:
    """The run directories `data/runs` holds, relative to it (the sources' pretraining curves are exported
    with the sources themselves, by `python -m lab sources export`)."""
    from lab.sources import SOURCE_NAMES

    return (["efficientscale-tiny", "efficientscale-tiny-baseline"] + [f"growth/{k}" for k in GROWTH_KEYS]
            + [f"routing/{v}" for v in ROUTING_VARIANTS] + [f"sources/{name}" for name in SOURCE_NAMES])


def _recipe(path: Path, run: str, stage: str, steps: int, **changes):
    """A recipe renamed, its schedule spanning `steps`, evaluated 10 times, without mid-run checkpoints."""
    from lab.train import load_recipe

    recipe = load_recipe(path)
    warmup = min(recipe.optim.warmup_steps, steps // 5)
    optim = {"warmup_steps": warmup, **changes.pop("optim", {})}
    return recipe.replace(run=run, stage=stage, optim=optim,
                          train={"max_steps": steps, "eval_every": max(5, steps // 10), "save_every": 0,
                                 "keep_checkpoints": 1, **changes.pop("train", {})}, **changes)


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def train_source(work: Path, steps: int) -> Path:
    """The dense source every growth and routing run starts from: the tiny recipe, `steps` steps."""
    from lab.train import train

    run_dir = _fresh(work / "source")
    train(_recipe(TINY, "growth-source", "preparation", steps), run_dir)
    return run_dir


def growth_runs(work: Path, out: Path, source_run: Path, steps: int, report=print) -> None:
    """Paper Table 1 at toy scale: grow the source eight ways and continue each with the tiny recipe."""
    from lab.checkpoint import read_config
    from lab.experiments.growth_table1 import random_init, rows_to_grow
    from lab.growth import half_again_deeper
    from lab.growth import plan_growth
    from lab.derive import grow_checkpoint
    from lab.train import train

    source = source_run / "final"
    cfg, _ = read_config(source)
    n_layers = half_again_deeper(cfg.n_layers)
    export_run(source_run, out / "growth" / "source",
               f"the dense source of the growth comparison: the tiny recipe, M({cfg.n_layers}, {cfg.dim})")
    rows = rows_to_grow(cfg, n_layers)
    wide = rows[0][2]
    rows.append(("identity", "FPI + identity blocks (zeroed o/down)",
                 dict(wide, n_layers=n_layers, method="fpi", depth="identity")))
    for key, label, request in rows + [("random", "random init", None)]:
        init = _fresh(work / "grown" / key)
        if request is None:
            plan = plan_growth(cfg, **dict(rows[-1][2], method="fpi"))
            random_init(plan.target, init, source, 0)
        else:
            plan = plan_growth(cfg, **request)
            grow_checkpoint(source, init, plan)
        t = plan.target
        run_dir = _fresh(work / "growth" / key)
        # Continued at the Scale-Up learning rate of the tiny pipeline (a third of the source's, as in the
        # paper's Table 3), so that a grown model that keeps the loss is not thrown off by a from-scratch peak.
        recipe = _recipe(TINY, f"growth-{key}", "scale-up", steps, optim={"lr": GROWTH_LR})
        train(recipe, run_dir, init_from=init, progress=True)
        export_run(run_dir, out / "growth" / key,
                   f"{label}: M({cfg.n_layers}, {cfg.dim}) -> M({t.n_layers}, {t.dim}), then {steps} steps of the "
                   f"tiny recipe at lr {GROWTH_LR:g} (step 0: the loss right after growth)",
                   growth={"method": plan.method if request else "random", "depth": plan.depth if request else None,
                           "source": f"M({cfg.n_layers}, {cfg.dim})", "target": f"M({t.n_layers}, {t.dim})"})
        report(f"growth/{key} done")


def routing_runs(work: Path, out: Path, source_run: Path, steps: int, report=print) -> None:
    """Upcycle the source five ways and continue each as an MoE for `steps` steps."""
    from lab.train import train
    from lab.upcycle import UpcyclePlan
    from lab.derive import upcycle_checkpoint

    source = source_run / "final"
    for variant, (options, what) in ROUTING_VARIANTS.items():
        plan = UpcyclePlan(**options)
        init = _fresh(work / "upcycled" / variant)
        upcycle_checkpoint(source, init, plan)
        run_dir = _fresh(work / "routing" / variant)
        # Logged every 2 steps: the expert-load heatmaps over training need the columns.
        recipe = _recipe(TINY_MOE, f"routing-{variant}", "scale-out", steps, optim={"lr": ROUTING_LR},
                         train={"log_every": 2})
        train(recipe, run_dir, init_from=init, progress=True)
        export_run(run_dir, out / "routing" / variant,
                   f"{what}; upcycled from the tiny dense source, {steps} steps "
                   "(step 0: the loss right after upcycling)",
                   upcycle=dataclasses.asdict(plan))
        report(f"routing/{variant} done")


def pipeline_runs(work: Path, out: Path, recipe: Path = PIPELINE, report=print) -> None:
    """The tiny pipeline and its baseline (lab.pipeline), exported without weights."""
    from lab.pipeline import pipeline_report, run_pipeline

    run_dir = _fresh(work / "efficientscale-tiny")
    started = time.perf_counter()
    run_pipeline(recipe, run_dir, report=report)
    report(f"pipeline and baseline in {time.perf_counter() - started:.0f} s")
    report(pipeline_report(run_dir).format())
    export_run(run_dir, out / "efficientscale-tiny",
               "the tiny EfficientScale pipeline: Preparation (dense) -> Scale-Up (AKI-Pro) -> Scale-Out "
               "(8 experts, top-2), continued pretraining after each step; one metrics file, cumulative "
               "step/tokens/flops, a transition record at each stage boundary")
    export_run(run_dir / "baseline", out / "efficientscale-tiny-baseline",
               "the tiny pipeline's final MoE shape trained from scratch on the pipeline's total FLOPs")
    report("efficientscale-tiny done")


def check(out: Path) -> list[str]:
    """Problems with `out` as a reference-run directory (empty: complete and readable)."""
    problems = []
    found = {str(p.relative_to(out)) for p in find_runs(out)}
    for name in expected_runs():
        if name not in found:
            problems.append(f"{out / name}: missing")
            continue
        run = load_run(out / name)
        problems += run.metrics.problems
        if not run.meta.get("description"):
            problems.append(f"{out / name}/meta.json: no description")
        if not run.events("eval"):
            problems.append(f"{out / name}: no eval records")
    from lab.experiments.runner import MEASUREMENTS_FILE, STATE_FILE
    from lab.experiments.settings import SETTINGS_FILE

    # Exported experiments (data/runs/experiments) keep their settings, per-seed measurements and per-seed
    # state (which runs are done: lab.experiments.export) too.
    small = (META_FILE, METRICS_FILE, "README.md", SETTINGS_FILE, MEASUREMENTS_FILE, STATE_FILE)
    heavy = [p for p in out.rglob("*") if p.is_file() and p.name not in small]
    problems += [f"{p}: not a metrics or meta file (no weights here)" for p in heavy]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.experiments.reference_runs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "runs", help="where the runs go (data/runs)")
    parser.add_argument("--work", type=Path, default=Path("runs/reference"), help="scratch directory with weights")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="regenerate these parts only")
    parser.add_argument("--source-steps", type=int, default=150, help="steps of the dense source (tiny recipe)")
    parser.add_argument("--growth-steps", type=int, default=30, help="continued-training steps per growth method")
    parser.add_argument("--routing-steps", type=int, default=40, help="MoE training steps per routing variant")
    parser.add_argument("--pipeline-recipe", type=Path, default=PIPELINE)
    parser.add_argument("--check", action="store_true", help="only check that --out is complete and readable")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        print("\n".join(problems) or f"{args.out}: {len(expected_runs())} runs, complete")
        return 1 if problems else 0
    from lab.errors import LabError

    started = time.perf_counter()
    try:
        if "pipeline" in args.only:
            pipeline_runs(args.work, args.out, args.pipeline_recipe)
        if "growth" in args.only or "routing" in args.only:
            source = train_source(args.work, args.source_steps)
            if "growth" in args.only:
                growth_runs(args.work, args.out, source, args.growth_steps)
            if "routing" in args.only:
                routing_runs(args.work, args.out, source, args.routing_steps)
    except LabError as e:
        print(f"error: {e}")
        return 2
    print(f"regenerated {', '.join(args.only)} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
