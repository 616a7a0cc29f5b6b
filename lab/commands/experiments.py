"""`python -m lab experiments run|claims|list|export`: the papers' experiments over seeds, and the claims
they test (lab.experiments.runner, lab.experiments.claims)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.commands import positive_int
from lab.errors import LabError

ORDER = 65


def _settings(module, args: argparse.Namespace):
    from lab.experiments.settings import make_settings, parse_assignments

    overrides = parse_assignments(args.set)
    for key, value in (("source", args.source), ("tokens", args.tokens)):
        if value is not None:
            overrides[key] = value
    if args.steps is not None:
        if not hasattr(module.Settings, "steps"):
            raise LabError(f"experiment {module.NAME} has no single --steps; set its stages' steps with "
                           f"--set (python -m lab experiments list shows them)")
        overrides["steps"] = str(args.steps)
    return make_settings(module.Settings, overrides)


def run(args: argparse.Namespace) -> None:
    from lab.experiments.catalog import experiment
    from lab.experiments.runner import run_experiment
    from lab.train import TrainingStopped

    module = experiment(args.name)
    settings = _settings(module, args)
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    try:
        measured = run_experiment(module, settings, args.out, seeds, progress=not args.quiet, report=print)
    except TrainingStopped as e:
        print(f"{e} (run the same command again to resume)", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"{module.NAME}: seeds {seeds[0]}..{seeds[-1]} measured in {args.out}/seed-*/measurements.json")
    for seed, values in measured.items():
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))


def claims(args: argparse.Namespace) -> None:
    from lab.atomic_files import write_text_atomically
    from lab.experiments.claims import evaluate, format_markdown, format_table

    outputs = [Path(p) for p in (args.json, args.markdown) if p is not None]
    for path in outputs:  # checked before the measurements are read
        if not path.parent.is_dir():
            raise LabError(f"{path}: its folder {path.parent} does not exist")
    result = evaluate(args.dirs, report=print)
    print(format_table(result["claims"]))
    if args.json is not None:
        write_text_atomically(args.json, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")
    if args.markdown is not None:
        write_text_atomically(args.markdown, format_markdown(result["claims"]) + "\n")
        print(f"wrote {args.markdown}")


def list_experiments(args: argparse.Namespace) -> None:
    from lab.experiments.catalog import MODULES, experiment
    from lab.experiments.settings import describe

    for name in MODULES:
        module = experiment(name)
        print(f"{name}: {module.PAPER}")
        for key, kind, default in describe(module.Settings):
            shown = list(default) if isinstance(default, tuple) else default
            print(f"  {key:<18} {kind:<16} {shown}")


def export(args: argparse.Namespace) -> None:
    from lab.experiments.export import export_experiment

    written = export_experiment(args.dir, args.dest)
    print(f"wrote {len(written)} files to {args.dest}")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "experiments", help="the papers' experiments over seeds, and the claims they test",
        description="Run an experiment (table1, table2, upcycle, pipeline, balance, msg, llama_pro) over seeds into "
                    "a resumable directory, and judge the claims (C1-C18) on the measurements of finished experiments.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    r = sub.add_parser("run", help="run an experiment over seeds (resumable: run it again to continue)",
                       description="Seed s varies everything random: growth maps and noise, router rows, "
                                   "from-scratch initialisation, data order. OUT/settings.json records the "
                                   "settings; a later run into OUT must give the same ones.")
    r.add_argument("name", help="table1 | table2 | upcycle | pipeline | balance | msg | llama_pro")
    r.add_argument("--seeds", type=positive_int, required=True, metavar="N", help="how many seeds")
    r.add_argument("--seed-base", type=int, default=0, metavar="S", help="the first seed (seeds S..S+N-1)")
    r.add_argument("--out", type=Path, required=True, metavar="DIR", help="the experiment directory")
    r.add_argument("--source", metavar="PATH", help="the dense source checkpoint (a Hugging Face directory)")
    r.add_argument("--tokens", metavar="DIR", help="memory-mapped training tokens (default: data/tokens; none: the shipped corpus)")
    r.add_argument("--steps", type=positive_int, metavar="N", help="the experiment's training steps per run")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other setting (python -m lab experiments list shows them and their defaults)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=run)

    c = sub.add_parser("claims", help="judge the claims on experiment directories",
                       description="Reads each DIR's settings.json and seed-*/measurements.json, applies the fixed "
                                   "rule to every claim whose experiment is given, prints the verdicts.")
    c.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="experiment directories")
    c.add_argument("--json", metavar="OUT", help="write the claims file here")
    c.add_argument("--markdown", metavar="OUT", help="write the claims as a Markdown table here (the README's)")
    c.set_defaults(func=claims)

    ls = sub.add_parser("list", help="the experiments, their settings and defaults")
    ls.set_defaults(func=list_experiments)

    e = sub.add_parser("export", help="copy an experiment without its weights (metrics, meta, measurements)")
    e.add_argument("dir", type=Path, help="experiment directory")
    e.add_argument("dest", type=Path, help="where the light copy goes (replaced)")
    e.set_defaults(func=export)
