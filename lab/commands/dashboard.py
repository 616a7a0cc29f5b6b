"""`python -m lab dashboard [--runs DIR] [--port N]`: the Streamlit dashboard (`streamlit run app.py`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lab.errors import LabError
from lab import paths

ORDER = 75
APP = paths.DASHBOARD_APP


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [1, 65535], got {text}")
    return value


def command(args: argparse.Namespace) -> list[str]:
    """The `streamlit run` command line for these arguments (checked first: a missing --runs DIR is an error)."""
    if not APP.is_file():
        raise LabError(f"{APP} not found: the dashboard runs from a clone of the repository")
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", args.host,
           "--server.port", str(args.port), "--server.headless", "true"]
    if args.runs is not None:
        runs = Path(args.runs).expanduser().resolve()
        if not runs.is_dir():
            raise LabError(f"--runs {args.runs}: no such directory")
        cmd += ["--", "--runs", str(runs)]
    return cmd


def run(args: argparse.Namespace) -> None:
    cmd = command(args)
    os.chdir(APP.parent)  # Streamlit reads .streamlit/config.toml from the working directory
    os.execv(cmd[0], cmd)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("dashboard", help="the Streamlit dashboard (loss curves, expert load, savings, growth)",
                              description="Serve the dashboard on HOST:PORT (default 127.0.0.1:8501), showing the "
                                          "runs under DIR (default data/runs, the reference runs).")
    p.add_argument("--runs", metavar="DIR", help="runs directory (searched for metrics.jsonl, three levels deep)")
    p.add_argument("--port", type=port_number, default=8501, help="port (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1, this machine only)")
    p.set_defaults(func=run)
