"""An experiment directory without its weights: what `data/runs/experiments/` ships.

Kept: settings.json, every seed's measurements.json (what the claims are judged on) and every run's
metrics.jsonl and meta.json (what the measurements were read from, and what the dashboard shows), with
the paths of the machine that wrote them made relative to the experiment directory. Left out: starting
checkpoints, training checkpoints, final weights, the seeds' resume state.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from lab.errors import LabError
from lab.experiments.runner import MEASUREMENTS_FILE
from lab.experiments.settings import SETTINGS_FILE, read_settings
from lab.runs import META_FILE, METRICS_FILE


def export_experiment(source: Path, dest: Path) -> list[Path]:
    """Copy the light files of experiment directory `source` to `dest` (replaced atomically); returns them."""
    from lab.run_export import relative_paths

    source, dest = Path(source), Path(dest)
    read_settings(source)  # refuses what is not an experiment directory
    if dest.resolve() == source.resolve():
        raise LabError(f"{dest}: is the experiment directory itself; export to another directory")
    keep = [source / SETTINGS_FILE, *sorted(source.glob(f"seed-*/{MEASUREMENTS_FILE}"))]
    keep += sorted(p for p in source.glob("seed-*/**/*") if p.name in (METRICS_FILE, META_FILE)
                   and "checkpoints" not in p.relative_to(source).parts and "init" not in p.relative_to(source).parts)
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
