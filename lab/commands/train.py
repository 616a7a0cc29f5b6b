"""`python -m lab train --recipe RECIPE --out DIR [--max-steps N] [--resume] [--init CKPT] [--expert-parallel N]
[--shard-group N]`.

Under `python -m torch.distributed.run --nproc_per_node N -m lab train ...` the same command trains
with FSDP2 across the N processes; rank 0 writes the run directory.
"""

from __future__ import annotations

import argparse
import os
import sys

from lab.commands import positive_int, recipe_file

ORDER = 50


def run(args: argparse.Namespace) -> None:
    from lab.train import TrainingStopped, load_recipe, train

    recipe = load_recipe(args.recipe)
    if args.expert_parallel is not None:
        recipe = recipe.replace(hardware={"expert_parallel": args.expert_parallel})
    if args.shard_group is not None:
        recipe = recipe.replace(hardware={"shard_group": args.shard_group})
    try:
        summary = train(recipe, args.out, max_steps=args.max_steps, resume=args.resume, init_from=args.init,
                        progress=not args.quiet)
    except TrainingStopped as e:
        if os.environ.get("RANK", "0") == "0":
            print(str(e), file=sys.stderr)
        raise SystemExit(130) from None
    if os.environ.get("RANK", "0") != "0":
        return
    val = summary["val_loss"]
    print(f"run {summary['run']}: step {summary['step']}, {summary['tokens']:,} tokens, "
          f"train loss {summary['loss']:.4f}" if summary["loss"] is not None else
          f"run {summary['run']}: step {summary['step']}, {summary['tokens']:,} tokens")
    if val:
        print("validation loss: " + ", ".join(f"{domain} {loss:.4f}" for domain, loss in val.items()))
    if summary["tokens_per_s"]:
        print(f"tokens/s (last log interval): {summary['tokens_per_s']:,.0f}")
    print(f"model: {summary['checkpoint']}")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a model as a recipe says (FSDP2 under torchrun)",
        description="Train as a YAML recipe says (see recipes/). Writes DIR/meta.json, DIR/metrics.jsonl, "
                    "DIR/checkpoints/step-NNNNNN/ (Hugging Face directories with training state; under torchrun, each "
                    "process's shards) and "
                    "DIR/final/. SIGINT or SIGTERM checkpoints the current step and stops (exit 130).")
    p.add_argument("--recipe", required=True, type=recipe_file,
                   help="YAML recipe file, or the name of a shipped one (tiny, tiny-moe, ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (new, or the run's own with --resume)")
    p.add_argument("--max-steps", type=positive_int, default=None, metavar="N",
                   help="stop after this step (the schedule still spans the recipe's train.max_steps)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--init", default=None, metavar="CKPT",
                   help="start from this Hugging Face checkpoint instead of the recipe's model")
    p.add_argument("--expert-parallel", type=positive_int, default=None, metavar="N",
                   help="split each MoE layer's experts over groups of N processes, tokens sent to them by "
                        "all-to-all (recipe hardware.expert_parallel; under torchrun)")
    p.add_argument("--shard-group", type=positive_int, default=None, metavar="N",
                   help="HSDP: shard the model inside groups of N consecutive processes (a node) and replicate it "
                        "across the groups (recipe hardware.shard_group; default: shard over all processes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
