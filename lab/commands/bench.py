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


def run_sharded_load(args: argparse.Namespace) -> None:
    from lab.bench import sharded_load

    report = sharded_load.run(quick=args.quick, dtype=args.dtype, nproc=args.nproc, workdir=args.workdir)
    print(sharded_load.format_report(report))
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
                     on_step=lambda r: print(mfu.format_step(r), flush=True), time_limit_s=args.time_limit)
    if report["world_size"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(mfu.format_report(report))
        _write_json(report, args.json)


def run_parity(args: argparse.Namespace) -> None:
    from lab.bench import hf_parity

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise LabError("--device cuda: this machine has no CUDA GPU")
    report = hf_parity.run(args.device, quick=args.quick)
    print(hf_parity.format_report(report))
    _write_json(report, args.json)
    if not report["passed"]:
        failed = [f"{r['model']} {r['dtype']}" for r in report["results"] if not r["passed"]]
        raise LabError(f"our logits differ from transformers' beyond the tolerance: {', '.join(failed)}")


def run_gpu(args: argparse.Namespace) -> None:
    from lab.bench import gpu

    summary = gpu.run(args.out, dry_run=args.dry_run, budget_s=args.budget_s,
                      progress=lambda line: print(line, flush=True))
    print(gpu.format_summary(summary))
    print(f"wrote {Path(args.out) / gpu.SUMMARY}")
    bad = [p["name"] for p in summary["parts"] if p["status"] in ("failed", "timeout")]
    if bad:
        raise LabError(f"bench gpu: {', '.join(bad)} did not finish well (see {Path(args.out) / gpu.SUMMARY})")


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
    g.add_argument("--repeats", type=positive_int, default=5)
    _common(g, workdir=True)
    g.set_defaults(func=run_growth)

    u = benchmarks.add_parser("upcycle",
                              help="streaming upcycling of a ~120M bf16 checkpoint to 8 experts vs copying its bytes")
    u.add_argument("--repeats", type=positive_int, default=5)
    _common(u, workdir=True)
    u.set_defaults(func=run_upcycle)

    d = benchmarks.add_parser("dispatch", help="MoE dispatch ablation: masks, sort+loop, sort+grouped_mm, all experts")
    d.add_argument("--repeats", type=positive_int, default=7)
    d.add_argument("--warmup", type=positive_int, default=2)
    _common(d)
    d.set_defaults(func=run_dispatch)

    t = benchmarks.add_parser("training", help="training tokens/s of the tiny recipes")
    t.add_argument("--steps", type=positive_int, default=80)
    t.add_argument("--window", type=positive_int, default=10)
    _common(t, workdir=True)
    t.set_defaults(func=run_training)

    s = benchmarks.add_parser("sharded-load",
                              help="peak memory of each FSDP2 process loading a ~154M checkpoint (torchrun, gloo)",
                              description="Write a ~154M-parameter checkpoint, load it as a training stage does in "
                                          "N torchrun processes (gloo), and report each process's idle baseline, "
                                          "peak above it, and that peak over the model's fp32 size.")
    s.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="the checkpoint's dtype (default float32: what a training stage saves)")
    s.add_argument("--nproc", type=positive_int, default=2, help="processes (default 2)")
    s.add_argument("--quick", action="store_true", help="a toy model: checks that it runs, measures nothing")
    s.add_argument("--workdir", help="where the temporary checkpoint goes (default: the system's temp directory)")
    s.add_argument("--json", help="also write the report to this JSON file")
    s.set_defaults(func=run_sharded_load)

    a = benchmarks.add_parser("all", aliases=["suite"],
                              help="every benchmark; writes OUT/results.json and OUT/results.md")
    a.add_argument("--out", default="bench", help="the results' directory (default: bench)")
    a.add_argument("--only", nargs="+",
                   choices=("matmul_peak", "model", "dispatch", "training", "growth", "upcycle", "sharded_load"),
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
    m.add_argument("--time-limit", type=float, metavar="S",
                   help="take no further step once S seconds have passed (at least one step after warm-up)")
    m.add_argument("--json", help="also write the report to this JSON file (bench/mfu-NAME.json joins results.md)")
    m.set_defaults(func=run_mfu)

    c = benchmarks.add_parser("parity", help="our model vs transformers' on a device, fp32 and bf16, dense and MoE",
                              description="Random dense (Llama) and MoE (Mixtral) models, written by the lab and "
                                          "opened by transformers, compared on the same tokens in fp32 and bf16.")
    c.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where to compare (default: cuda)")
    c.add_argument("--quick", action="store_true", help="toy sizes (seconds on a CPU)")
    c.add_argument("--json", help="also write the report to this JSON file")
    c.set_defaults(func=run_parity)

    u = benchmarks.add_parser("gpu", help="one H200 in 8 minutes: CUDA parity, MFU of the 1B dense and 8x1B MoE",
                              description="CUDA parity with transformers, then the MFU of recipes/gpu-1b.yaml and "
                                          "of its 8-expert top-2 upcycle, within a time budget; writes "
                                          "OUT/mfu-dense-1b.json, OUT/mfu-moe-8x1b.json and OUT/gpu.json.")
    u.add_argument("--out", default="bench", help="the results' directory (default: bench)")
    u.add_argument("--budget-s", type=float, default=480.0,
                   help="seconds for everything (default 480); a part that would not fit is skipped")
    u.add_argument("--dry-run", action="store_true",
                   help="the same script on the CPU with tiny stand-in shapes, results marked dry_run")
    u.set_defaults(func=run_gpu)
