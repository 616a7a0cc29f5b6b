"""Training runs on disk: `meta.json` and the append-only `metrics.jsonl`, read the forgiving way.

The notebooks and the dashboard read runs only through this module. A live run may be writing its
last line while we read: a line without its newline is not yet a record and is left for the next
read. A malformed complete line is skipped and reported, never fatal.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
META_FILE = "meta.json"


@dataclass
class MetricsLog:
    """The records of a metrics file and the problems met reading it (one line each)."""

    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_metrics(data: bytes | str, source: str = "metrics.jsonl") -> MetricsLog:
    """Records from the bytes of a metrics file. Only complete lines count; bad lines are skipped."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    log = MetricsLog()
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], 1):  # the last piece has no newline yet (or is empty)
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            log.problems.append(f"{source} line {number}: not valid JSON ({e.msg}); skipped")
            continue
        if not isinstance(record, dict):
            log.problems.append(f"{source} line {number}: not a JSON object; skipped")
            continue
        log.records.append(record)
    return log


def read_metrics(path: str | os.PathLike) -> MetricsLog:
    path = Path(path)
    if not path.is_file():
        return MetricsLog(problems=[f"{path}: no such file"])
    return parse_metrics(path.read_bytes(), str(path))


@dataclass
class Run:
    """One run directory: its name, its meta.json (empty if absent or unreadable) and its metrics."""

    name: str
    path: Path
    meta: dict
    metrics: MetricsLog

    def events(self, kind: str) -> list[dict]:
        """The records of one event kind (`train`, `eval`, `sample`, ...)."""
        return [r for r in self.metrics.records if r.get("event") == kind]

    @property
    def world_size(self) -> int:
        """How many processes trained the run (meta.json `environment.world_size`; 1 when unknown)."""
        env = self.meta.get("environment") if isinstance(self.meta.get("environment"), dict) else {}
        size = env.get("world_size", 1)
        return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 1


def load_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    metrics = read_metrics(path / METRICS_FILE)
    meta: dict = {}
    if (path / META_FILE).is_file():
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except ValueError as e:
            metrics.problems.append(f"{path / META_FILE}: not valid JSON ({e}); ignored")
        if not isinstance(meta, dict):
            meta = {}
    return Run(path.name, path, meta, metrics)


def find_runs(root: str | os.PathLike, max_depth: int = 3) -> list[Path]:
    """Directories under `root` (itself included) that hold a metrics file, sorted by path."""
    root = Path(root)
    found = []
    for directory, subdirs, files in os.walk(root):
        depth = len(Path(directory).relative_to(root).parts)
        if METRICS_FILE in files:
            found.append(Path(directory))
        subdirs[:] = [] if depth >= max_depth else sorted(d for d in subdirs if not d.startswith("."))
    return sorted(found)
