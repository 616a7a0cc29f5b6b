"""A run's record, copied for shipping: its metrics.jsonl and meta.json without its weights, with the
paths of the machine that wrote it made relative. The reference runs in data/runs, the sources' curves
and the exported experiments are all made this way."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from lab.runs import META_FILE, METRICS_FILE


def relative_paths(json_text: str, run_dir: Path) -> str:
    """`json_text` with the paths inside `run_dir` (checkpoints, stage directories) made relative to it:
    the shipped files name no directory of the machine that wrote them."""
    prefix = json.dumps(str(run_dir.resolve()) + "/")[1:-1]  # as it appears inside a JSON string
    return json_text.replace(prefix, "")


def export_run(run_dir: Path, dest: Path, description: str, **extra) -> Path:
    """Copy a run's metrics.jsonl and meta.json (plus `description` and `extra`) to `dest`, atomically."""
    meta = json.loads((run_dir / META_FILE).read_text(encoding="utf-8"))
    meta = {"description": description, **extra, **{k: v for k, v in meta.items() if k != "description"}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    metrics = (run_dir / METRICS_FILE).read_text(encoding="utf-8")
    (tmp / METRICS_FILE).write_text(relative_paths(metrics, run_dir), encoding="utf-8")
    meta_text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    (tmp / META_FILE).write_text(relative_paths(meta_text, run_dir), encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest
