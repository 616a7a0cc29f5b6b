"""`python -m lab COMMAND ...`: a thin layer that parses arguments and calls the library.

The commands are the modules of `lab.commands`, found at start-up. A mistake in the user's input
(a bad path, a bad option value, a malformed file) ends with one line on stderr, `error: ...`, and exit
code 2; so does a failure of the system under a command (a full disk, a file where a directory should
be, memory exhausted). SIGINT and SIGTERM end a command with exit code 130 after its temporary output
is removed (lab.interrupts). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import shlex
import sys

import lab.commands
from lab.errors import LabError
from lab.interrupts import EXIT_CODE, interrupt_on_sigterm

# An error line is cut here: its message may quote a file's content.
ERROR_LINE_LIMIT = 1000


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error:` line (the usage is one `--help` away)."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(f'{self.prog}: {message}')} (see --help)\n")


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= ERROR_LINE_LIMIT else text[:ERROR_LINE_LIMIT] + "... (cut)"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m lab",
        description="EfficientScale Lab: grow dense decoders and upcycle them into Mixtures of Experts.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [importlib.import_module(f"lab.commands.{m.name}") for m in pkgutil.iter_modules(lab.commands.__path__)]
    for module in sorted((m for m in modules if hasattr(m, "add_parser")), key=lambda m: m.ORDER):
        module.add_parser(subparsers)
    return parser


def _system_error(e: OSError) -> str:
    where = e.filename if e.filename is not None else "a file"
    return f"{where}: {e.strerror or e}"


def run() -> None:
    """The console script (`efficientscale ...`, the same as `python -m lab ...`)."""
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    with interrupt_on_sigterm():
        try:
            try:
                args = build_parser().parse_args(argv)
            except SystemExit as e:  # --help (0) or a usage mistake (2, its error line already printed)
                return e.code if isinstance(e.code, int) else 2
            # The command as the user would type it, for what records it (model cards).
            args.command_line = shlex.join(["python", "-m", "lab", *(sys.argv[1:] if argv is None else argv)])
            args.func(args)
        except LabError as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_CODE
        except OSError as e:  # the system refused a read or write the input asked for
            print(f"error: {one_line(_system_error(e))}", file=sys.stderr)
            return 2
        except MemoryError:
            print("error: out of memory (a smaller model, batch or --max-new-tokens needs less)", file=sys.stderr)
            return 2
    return 0
