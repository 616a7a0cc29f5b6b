"""An experiment directory without its weights: what `data/runs/experiments/` ships.

Kept: settings.json, every seed's measurements.json (what the claims are judged on), its state.json
(which runs are done) and every run's metrics.jsonl and meta.json (what the measurements were read
from, and what the dashboard shows), with the paths of the machine that wrote them made relative to the
experiment directory. Left out: starting checkpoints, training checkpoints, final weights.

An export copied back into an experiment directory resumes there (lab.experiments.runner): measured
seeds are skipped, and a seed exported half-way runs only the runs its state.json lacks (every run
starts from the source or from scratch, never from another run's weights), so an experiment can move
between machines, or outlive one, with its light files alone.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from lab.errors import LabError
from lab.experiments.runner import MEASUREMENTS_FILE, STATE_FILE
from lab.experiments.settings import SETTINGS_FILE, read_settings
from lab.runs import META_FILE, METRICS_FILE


def _finished(source: Path, path: Path) -> bool:
    """Whether `path` lies in a run its seed's state.json says is done: a run caught half-way is left out
    (its weights are not exported, so an import would have nothing to resume it from; it runs again)."""
    from lab.experiments.runner import read_json

    seed, run = path.relative_to(source).parts[:2]
    state = read_json(source / seed / STATE_FILE) or {}
    return run in state.get("done", {})


def export_experiment(source: Path, dest: Path) -> list[Path]:
    """Copy the light files of experiment directory `source` to `dest` (replaced atomically); returns them."""
    from lab.run_export import relative_paths

    source, dest = Path(source), Path(dest)
    read_settings(source)  # refuses what is not an experiment directory
    if dest.resolve() == source.resolve():
        raise LabError(f"{dest}: is the experiment directory itself; export to another directory")
    keep = [source / SETTINGS_FILE, *sorted(source.glob(f"seed-*/{MEASUREMENTS_FILE}")),
            *sorted(source.glob(f"seed-*/{STATE_FILE}"))]
    keep += sorted(p for p in source.glob("seed-*/**/*") if p.name in (METRICS_FILE, META_FILE)
                   and "checkpoints" not in p.relative_to(source).parts and "init" not in p.relative_to(source).parts
                   and _finished(source, p))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        for path in keep:
            target = tmp / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(relative_paths(path.read_text(encoding="utf-8"), source), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [dest / p.relative_to(source) for p in keep]
