"""`python -m lab notebooks`: build the notebooks' .ipynb from their .py sources, or execute them."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 90


def run(args: argparse.Namespace) -> None:
    from lab.errors import LabError
    from lab.notebooks import build, execute, notebook_sources

    sources = notebook_sources(args.dir)
    if args.only:
        sources = [s for s in sources if any(s.stem.startswith(o) or s.stem == o for o in args.only)]
    if not sources:
        raise LabError(f"{args.dir or 'notebooks/'}: no notebook matches (NN_name.py sources)")
    for source in sources:
        if not args.execute:
            print(build(source))
            continue
        out = Path(args.out) / source.with_suffix(".ipynb").name if args.out else None
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
        done = execute(source, fast=not args.full, output=out)
        print(f"{source.name}: {done.seconds:.1f} s" + (f" -> {out}" if out else ""))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("notebooks", help="build the notebooks (.ipynb from .py), or execute them",
                              description="Without options, writes notebooks/NN_name.ipynb from each "
                                          "notebooks/NN_name.py (jupytext percent format). With --execute, "
                                          "runs each in a fresh kernel (LAB_FAST=1 unless --full) and prints its time.")
    p.add_argument("only", nargs="*", help="notebooks to take, by number or name (default: all)")
    p.add_argument("--execute", action="store_true", help="run the notebooks top to bottom instead of building them")
    p.add_argument("--full", action="store_true", help="with --execute: the full version (no LAB_FAST)")
    p.add_argument("--out", help="with --execute: write the executed notebooks into this folder")
    p.add_argument("--dir", help="the notebooks' folder (default: notebooks/ of the repository)")
    p.set_defaults(func=run)
