"""`python -m lab savings`: the paper's Table 6 and its two savings factors (time 4.12, compute 3.35), or the
same table measured on a pipeline run (`--run DIR`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = 70


def measured_table(run_dir: Path, baseline_dir: Path | None):
    """(phases, scratch, where the scratch row's throughput comes from) of a pipeline run directory."""
    from lab.errors import LabError
    from lab.flops import run_phases, scratch_phase, whole_run_phase
    from lab.runs import METRICS_FILE, load_run

    if not (run_dir / METRICS_FILE).is_file():
        raise LabError(f"{run_dir}: not a run directory (no {METRICS_FILE})")
    run = load_run(run_dir)
    phases = run_phases(run.metrics.records, run.world_size)
    if not phases:
        raise LabError(f"{run_dir}: no train records with tokens, FLOPs and tokens/s")
    if baseline_dir is None:  # a pipeline's own (OUT/baseline) or its exported sibling (data/runs/NAME-baseline)
        baseline_dir = next((d for d in (run_dir / "baseline", run_dir.with_name(run_dir.name + "-baseline"))
                             if (d / METRICS_FILE).is_file()), None)
    baseline = None
    if baseline_dir is not None:
        if not (baseline_dir / METRICS_FILE).is_file():
            raise LabError(f"{baseline_dir}: not a run directory (no {METRICS_FILE})")
        b = load_run(baseline_dir)
        baseline = whole_run_phase(b.events("train"), "baseline", b.world_size)
    source = f"the baseline's measured throughput ({baseline_dir})" if baseline else "the last stage's throughput"
    return phases, scratch_phase(phases, baseline), source


def run(args: argparse.Namespace) -> None:
    from lab.flops import savings
    from lab.paper import TABLE6, TABLE6_SCRATCH

    if args.run is not None:
        stages, scratch, source = measured_table(args.run, args.baseline)
        title = f"measured on {args.run} (from scratch: the final model on all the stages' tokens, at {source})"
    else:
        if args.baseline is not None:
            from lab.errors import LabError

            raise LabError("--baseline needs --run DIR (a pipeline run)")
        stages, scratch, title = list(TABLE6), TABLE6_SCRATCH, "AquilaMoE Table 6 (arXiv 2408.06567)"
    phases = list(stages) + [scratch]
    time_factor, compute_factor = savings(stages, scratch)
    if args.json:
        rows = [{"phase": p.name, "devices": p.devices, "tflops_per_device": p.tflops_per_device,
                 "params_b": p.params_b, "tokens_b": p.tokens_b, "tokens_per_day_b": p.tokens_per_day_b,
                 "days": p.days} for p in phases]
        print(json.dumps({"source": title, "phases": rows, "time_savings": time_factor,
                          "compute_savings": compute_factor}, indent=2))
        return
    print(title)
    print(f"{'phase':<14}{'devices':>8}{'TFLOP/s/dev':>12}{'model (B)':>11}{'tokens (B)':>12}"
          f"{'tokens/day (B)':>16}{'days':>8}")
    for p in phases:
        print(f"{p.name:<14}{p.devices:>8} {p.tflops_per_device:>11.4g} {p.params_b:>10.4g} {p.tokens_b:>11.4g}"
              f" {p.tokens_per_day_b:>15.4g} {p.days:>7.4g}")
    print(f"time savings factor:    {time_factor:.2f}")
    print(f"compute savings factor: {compute_factor:.2f}")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("savings", help="the paper's compute savings (Table 6), or a pipeline run's",
                              description="Time savings = scratch days / sum of the phases' days; compute "
                                          "savings weighs each by its cluster's TFLOP/s (lab/flops.py). With "
                                          "--run, each phase is a stage of a pipeline run, measured: its "
                                          "tokens, FLOPs and median tokens/s; the from-scratch row is the "
                                          "final model on all the stages' tokens at the baseline's measured "
                                          "throughput (DIR/baseline or DIR-baseline), else the last stage's.")
    p.add_argument("--run", type=Path, metavar="DIR", help="a pipeline run (python -m lab pipeline --out DIR)")
    p.add_argument("--baseline", type=Path, metavar="DIR", help="the from-scratch run to take the scratch "
                   "row's throughput from (default: DIR/baseline or DIR-baseline when present)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
