"""`python -m lab sources export RUN --out DIR`: a finished pretraining run as a shipped source (bf16
Hugging Face directory, tokenizer, model card, reference run); `python -m lab sources list`."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 55


def export(args: argparse.Namespace) -> None:
    from lab.sources import export_source

    result = export_source(args.run, args.out, recipe=args.recipe, overwrite=args.force)
    losses = result["losses"]
    print(f"{args.out}: mean validation loss {losses['full']['mean']:.4f} (every 256-token window), "
          f"{losses['eval-8x128']['mean']:.4f} (first 8 windows of 128), "
          f"{result['summary']['tokens']:,} tokens seen")


def list_all(args: argparse.Namespace) -> None:
    from lab.json_input import read_json
    from lab.sources import SOURCE_RUNS_DIR, list_sources

    for path in list_sources():
        meta = SOURCE_RUNS_DIR / path.name / "meta.json"
        loss = None
        if meta.is_file():
            try:
                loss = read_json(meta)["shipped_validation_loss"]["full"]["mean"]
            except (KeyError, TypeError):
                loss = None
            if not isinstance(loss, (int, float)) or isinstance(loss, bool):
                loss = None
        print(f"{path.name:<20} {'' if loss is None else f'mean validation loss {loss:.4f}'}")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sources", help="the shipped pretrained sources: export a run as one, list them")
    actions = p.add_subparsers(dest="sources_command", metavar="ACTION", required=True)
    e = actions.add_parser("export", help="export a finished run as a source (bf16, tokenizer, model card)")
    e.add_argument("run", type=Path, help="a finished run directory (with final/)")
    e.add_argument("--out", type=Path, required=True, help="the source's directory, e.g. data/sources/source-deep")
    e.add_argument("--recipe", type=Path, help="the recipe file, quoted in the model card (default: meta.json's)")
    e.add_argument("--force", action="store_true", help="replace an existing --out")
    e.set_defaults(func=export)
    s = actions.add_parser("list", help="the sources in data/sources/ and their validation losses")
    s.set_defaults(func=list_all)
