"""`python -m lab bench BENCHMARK`: the lab measured against references in the same run."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from lab.commands import positive_int
from lab.errors import LabError

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


def run_upcycle(args: argparse.Namespace) -> None:
    from lab.bench import upcycle_speed

    report = upcycle_speed.run(repeats=args.repeats, threads=args.threads, quick=args.quick, workdir=args.workdir)
    print(upcycle_speed.format_report(report))
    _write_json(report, args.json)


def run_dispatch(args: argparse.Namespace) -> None:
    from lab.bench import dispatch

    report = dispatch.run(repeats=args.repeats, warmup=args.warmup, threads=args.threads, quick=args.quick)
    print(dispatch.format_report(report))
    _write_json(report, args.json)


def run_training(args: argparse.Namespace) -> None:
    from lab.bench import training_speed

    report = training_speed.run(steps=args.steps, window=args.window, threads=args.threads, quick=args.quick,
                                workdir=args.workdir)
    print(training_speed.format_report(report))
    _write_json(report, args.json)


def run_all(args: argparse.Namespace) -> None:
    from lab.bench import suite

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise LabError(f"--out {out}: exists and is not a directory")
    suite.run(out, threads=args.threads, quick=args.quick, only=args.only, workdir=args.workdir)
    print((out / suite.RESULTS_MD).read_text(), end="")
    print(f"wrote {out / suite.RESULTS_JSON} and {out / suite.RESULTS_MD}")


def run_mfu(args: argparse.Namespace) -> None:
    from lab.bench import mfu

    if args.warmup >= args.steps:
        raise LabError(f"--warmup ({args.warmup}) must be below --steps ({args.steps})")
    report = mfu.run(args.recipe, steps=args.steps, warmup=args.warmup, experts=args.experts, top_k=args.top_k,
                     measure_peak=not args.no_matmul_peak, activation_checkpointing=args.activation_checkpointing,
                     on_step=lambda r: print(mfu.format_step(r), flush=True))
    if report["world_size"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(mfu.format_report(report))
        _write_json(report, args.json)


def _common(parser, *, workdir: bool = False) -> None:
    """The options every single benchmark takes."""
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny shapes: checks that it runs, measures nothing")
    if workdir:
        parser.add_argument("--workdir", help="where the temporary files go (default: the system's temp directory)")
    parser.add_argument("--json", help="also write the report to this JSON file")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmarks against the reference implementations",
                              description="Measure the lab against references in the same run.")
    benchmarks = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    b = benchmarks.add_parser("model", help="forward+backward of our model vs transformers' (Mixtral, Qwen2)")
    b.add_argument("--tokens", type=positive_int, default=2048)
    b.add_argument("--batch", type=positive_int, default=1)
    b.add_argument("--repeats", type=positive_int, default=7)
    b.add_argument("--warmup", type=positive_int, default=2)
    _common(b)
    b.set_defaults(func=run_model)

    g = benchmarks.add_parser("growth",
                              help="streaming growth of a ~120M bf16 checkpoint to ~770M vs copying its bytes")
    g.add_argument("--repeats", type=positive_int, default=3)
    _common(g, workdir=True)
    g.set_defaults(func=run_growth)

    u = benchmarks.add_parser("upcycle",
                              help="streaming upcycling of a ~120M bf16 checkpoint to 8 experts vs copying its bytes")
    u.add_argument("--repeats", type=positive_int, default=3)
    _common(u, workdir=True)
    u.set_defaults(func=run_upcycle)

    d = benchmarks.add_parser("dispatch", help="MoE dispatch ablation: masks, sort+loop, sort+grouped_mm, all experts")
    d.add_argument("--repeats", type=positive_int, default=7)
    d.add_argument("--warmup", type=positive_int, default=2)
    _common(d)
    d.set_defaults(func=run_dispatch)

    t = benchmarks.add_parser("training", help="training tokens/s of the tiny recipes")
    t.add_argument("--steps", type=positive_int, default=40)
    t.add_argument("--window", type=positive_int, default=10)
    _common(t, workdir=True)
    t.set_defaults(func=run_training)

    a = benchmarks.add_parser("all", aliases=["suite"],
                              help="every benchmark; writes OUT/results.json and OUT/results.md")
    a.add_argument("--out", default="bench", help="the results' directory (default: bench)")
    a.add_argument("--only", nargs="+", choices=("matmul_peak", "model", "dispatch", "training", "growth", "upcycle"),
                   help="run only these benchmarks")
    a.add_argument("--threads", type=positive_int, default=2)
    a.add_argument("--quick", action="store_true", help="toy shapes, one repeat: checks that it runs, measures nothing")
    a.add_argument("--workdir", help="where the temporary checkpoints and runs go")
    a.set_defaults(func=run_all)

    m = benchmarks.add_parser("mfu", help="MFU of a recipe's training step (random init, random tokens), per step",
                              description="Train N steps of a recipe on random tokens and print MFU per step against "
                                          "the device's data-sheet peak and its measured matmul peak. On one GPU: "
                                          "python -m lab bench mfu --recipe recipes/gpu-1b.yaml --steps 30")
    m.add_argument("--recipe", required=True, help="a training recipe (YAML); its init_from lends only its config")
    m.add_argument("--steps", type=positive_int, default=30)
    m.add_argument("--warmup", type=positive_int, default=5, help="first steps left out of the median (compilation)")
    m.add_argument("--experts", type=positive_int, help="bench the recipe's model upcycled to this many experts")
    m.add_argument("--top-k", type=positive_int, default=2, help="experts per token with --experts (default 2)")
    m.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="override the recipe's hardware.activation_checkpointing")
    m.add_argument("--no-matmul-peak", action="store_true", help="skip measuring the device's matmul peak")
    m.add_argument("--json", help="also write the report to this JSON file (bench/mfu-NAME.json joins results.md)")
    m.set_defaults(func=run_mfu)
