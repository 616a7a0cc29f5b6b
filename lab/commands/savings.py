"""`python -m lab savings`: the paper's Table 6 and its two savings factors (time 4.12, compute 3.35)."""

from __future__ import annotations

import argparse
import json

ORDER = 70


def run(args: argparse.Namespace) -> None:
    from lab.flops import AQUILA_SCRATCH, AQUILA_TABLE6, savings

    phases = list(AQUILA_TABLE6) + [AQUILA_SCRATCH]
    time_factor, compute_factor = savings(AQUILA_TABLE6, AQUILA_SCRATCH)
    if args.json:
        rows = [{"phase": p.name, "devices": p.devices, "gflops_per_device": p.gflops_per_device,
                 "params_b": p.params_b, "tokens_b": p.tokens_b, "tokens_per_day_b": p.tokens_per_day_b,
                 "days": p.days} for p in phases]
        print(json.dumps({"phases": rows, "time_savings": time_factor, "compute_savings": compute_factor},
                         indent=2))
        return
    print("AquilaMoE Table 6 (arXiv 2408.06567)")
    print(f"{'phase':<14}{'devices':>8}{'GFLOPS/dev':>12}{'model (B)':>11}{'tokens (B)':>12}"
          f"{'tokens/day (B)':>16}{'days':>8}")
    for p in phases:
        print(f"{p.name:<14}{p.devices:>8}{p.gflops_per_device:>12g}{p.params_b:>11g}{p.tokens_b:>12g}"
              f"{p.tokens_per_day_b:>16g}{p.days:>8.1f}")
    print(f"time savings factor:    {time_factor:.2f}")
    print(f"compute savings factor: {compute_factor:.2f}")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("savings", help="the paper's compute savings (Table 6)",
                              description="Time savings = scratch days / sum of the phases' days; compute "
                                          "savings weighs each by its cluster's GFLOPS (lab/flops.py).")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
