"""`python -m lab COMMAND ...`: a thin layer that parses arguments and calls the library.

The commands are the modules of `lab.commands`, found at start-up. A mistake in the user's input
(a bad path, a bad option value) ends with one line on stderr and exit code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import lab.commands
from lab.errors import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="EfficientScale Lab: grow dense decoders and upcycle them into Mixtures of Experts.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [importlib.import_module(f"lab.commands.{m.name}") for m in pkgutil.iter_modules(lab.commands.__path__)]
    for module in sorted((m for m in modules if hasattr(m, "add_parser")), key=lambda m: m.ORDER):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
