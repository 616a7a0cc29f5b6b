"""`python -m lab pipeline --recipe RECIPE --out DIR [--resume]`: Preparation -> Scale-Up -> Scale-Out and
a from-scratch baseline, as one recipe says (lab.pipeline)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from lab.commands import recipe_file

ORDER = 60


def run(args: argparse.Namespace) -> None:
    from lab.pipeline import load_pipeline, pipeline_report, run_pipeline
    from lab.train import TrainingStopped

    pipeline = load_pipeline(args.recipe)  # every check before any work
    if args.check:
        def tokens(recipe) -> str:
            d = recipe.data
            return f"{recipe.train.max_steps * d.batch_size * d.grad_accum * d.seq_len:.3g} tokens"

        for s in pipeline.stages:
            print(f"{s.name} ({s.label}): {s.describe()}, {s.recipe.train.max_steps} steps, {tokens(s.recipe)}, "
                  f"lr {s.recipe.optim.lr:g}, {s.flops:.3e} FLOPs")
        if pipeline.baseline is not None:
            b = pipeline.baseline
            print(f"baseline: {b.train.max_steps} steps from scratch, {tokens(b)}, lr {b.optim.lr:g}, "
                  f"{pipeline.flops:.3e} FLOPs (the stages' total)")
        return
    if args.out is None:
        from lab.errors import LabError

        raise LabError("--out DIR is required to run a pipeline (--check alone only validates the recipe)")
    main = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for all
    started = time.perf_counter()
    try:
        run_pipeline(pipeline, args.out, resume=args.resume, progress=not args.quiet, report=print)
    except TrainingStopped as e:
        if main:
            print(str(e), file=sys.stderr)
        raise SystemExit(130) from None
    if main:
        print(f"pipeline done in {time.perf_counter() - started:.0f} s: {args.out}")
        print(pipeline_report(args.out).format())


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pipeline", help="Preparation -> Scale-Up -> Scale-Out with continued training, and a baseline",
        description="Run a pipeline recipe (recipes/efficientscale-*.yaml; schema in lab/pipeline/recipe.py): "
                    "each stage trains, the next grows or upcycles its final model and trains again. Writes "
                    "DIR/metrics.jsonl (all stages, cumulative FLOPs), DIR/stages/NAME/ (each stage's run and "
                    "Hugging Face checkpoint in final/) and DIR/baseline/. SIGINT or SIGTERM checkpoints and "
                    "stops (exit 130); --resume continues where it stopped.")
    p.add_argument("--recipe", required=True, type=recipe_file,
                   help="pipeline YAML recipe, or the name of a shipped one (efficientscale-tiny, ...)")
    p.add_argument("--out", required=False, metavar="DIR", help="pipeline directory (new, or its own with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the pipeline in --out where it stopped")
    p.add_argument("--check", action="store_true", help="only validate the recipe and print the stages' plan")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
