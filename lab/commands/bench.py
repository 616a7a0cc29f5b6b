"""`python -m lab bench BENCHMARK`: the lab measured against references in the same run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab.commands import positive_int

ORDER = 90


def run_model(args: argparse.Namespace) -> None:
    from lab.bench import model_speed

    report = model_speed.run(tokens=args.tokens, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                             threads=args.threads, quick=args.quick)
    print(model_speed.format_report(report))
    _write_json(report, args.json)


def _write_json(report: dict, path: str | None) -> None:
    if path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(path)


def run_growth(args: argparse.Namespace) -> None:
    from lab.bench import growth_speed

    report = growth_speed.run(repeats=args.repeats, threads=args.threads, quick=args.quick, workdir=args.workdir)
    print(growth_speed.format_report(report))
    _write_json(report, args.json)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks against the reference implementations",
                              description="Measure the lab against references in the same run.")
    benchmarks = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    b = benchmarks.add_parser("model", help="forward+backward of our model vs transformers' (Mixtral, Qwen2)")
    b.add_argument("--tokens", type=positive_int, default=2048)
    b.add_argument("--batch", type=positive_int, default=1)
    b.add_argument("--repeats", type=positive_int, default=7)
    b.add_argument("--warmup", type=positive_int, default=2)
    b.add_argument("--threads", type=positive_int, default=2)
    b.add_argument("--quick", action="store_true", help="tiny shapes: checks that it runs, measures nothing")
    b.add_argument("--json", help="also write the report to this JSON file")
    b.set_defaults(func=run_model)

    g = benchmarks.add_parser("growth", help="streaming growth of a ~120M bf16 checkpoint to ~770M vs copying its bytes")
    g.add_argument("--repeats", type=positive_int, default=3)
    g.add_argument("--threads", type=positive_int, default=2)
    g.add_argument("--quick", action="store_true", help="tiny shapes: checks that it runs, measures nothing")
    g.add_argument("--workdir", help="where the temporary checkpoints go (default: the system's temp directory)")
    g.add_argument("--json", help="also write the report to this JSON file")
    g.set_defaults(func=run_growth)
