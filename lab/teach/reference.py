"""The reference runs shipped in `data/runs/` (made by `python -m lab.experiments.reference_runs`), as the
notebooks read them: the long curves that would take too long to train live.

A notebook never fails because a reference run is missing (a fresh clone before the runs were made,
or a trimmed copy): `reference_run` and `reference_group` return None / {} and `missing_note` says
how to make them, while the live part of the notebook still runs.
"""

from __future__ import annotations

from pathlib import Path

from lab.runs import Run, load_run
from lab import paths

REFERENCE_DIR = paths.REFERENCE_RUNS_DIR
MAKE_THEM = "python -m lab.experiments.reference_runs --out data/runs"


def reference_run(name: str, root: str | Path | None = None) -> Run | None:
    """The run `data/runs/<name>` (e.g. "efficientscale-tiny", "growth/aki-pro"), or None if absent."""
    path = Path(root or REFERENCE_DIR) / name
    if not (path / "metrics.jsonl").is_file():
        return None
    return load_run(path)


def reference_group(group: str, order: tuple[str, ...] = (), root: str | Path | None = None) -> dict[str, Run]:
    """{name: run} of the runs under `data/runs/<group>/` ("growth", "routing"): the names in `order`
    first (those present), then the rest alphabetically; {} when there are none."""
    base = Path(root or REFERENCE_DIR) / group
    if not base.is_dir():
        return {}
    names = sorted(p.name for p in base.iterdir() if (p / "metrics.jsonl").is_file())
    names = [n for n in order if n in names] + [n for n in names if n not in order]
    return {n: load_run(base / n) for n in names}


def missing_note(what: str) -> str:
    return f"{what}: not found under {REFERENCE_DIR} — make them with `{MAKE_THEM}`; the live part above still ran."
