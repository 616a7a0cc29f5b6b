"""Training runs on disk: `meta.json` and the append-only `metrics.jsonl`, read the forgiving way.

The notebooks and the dashboard read runs only through this module. A live run may be writing its
last line while we read: a line without its newline is not yet a record and is left for the next
read. A malformed complete line is skipped and reported, never fatal.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from lab.json_input import JSONInputError, loads, read_json

METRICS_FILE = "metrics.jsonl"
META_FILE = "meta.json"


@dataclass
class MetricsLog:
    """The records of a metrics file and the problems met reading it (one line each)."""

    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# Fields whose type every reader relies on (lab.train.metrics documents them): a record that breaks one
# is skipped like a malformed line, so that no page or command meets a string where it sums numbers.
_NUMBERS = ("step", "tokens", "flops", "time", "loss", "lm_loss", "lr", "tokens_per_s", "mfu", "aux_loss",
            "z_loss", "router_entropy", "val_loss_mean", "stage_step")
_MAY_BE_INFINITE = ("grad_norm",)  # a gradient that overflowed before clipping is recorded as it was


def _number(value, finite: bool = True) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and (not finite or math.isfinite(value)))


def _counts(value) -> bool:
    """A list (per MoE layer) of lists of finite numbers (per expert)."""
    return isinstance(value, list) and all(isinstance(row, list) and all(_number(c) for c in row) for row in value)


def record_problem(record: dict) -> str | None:
    """What is wrong with one metrics record (the first bad field, named), or None."""
    for key in _NUMBERS:
        if record.get(key) is not None and not _number(record[key]):
            return f"{key} must be a finite number"
    for key in _MAY_BE_INFINITE:
        if record.get(key) is not None and not _number(record[key], finite=False):
            return f"{key} must be a number"
    if "tokens_per_expert" in record and not _counts(record["tokens_per_expert"]):
        return "tokens_per_expert must be a list of lists of numbers"
    by_domain = record.get("tokens_per_expert_by_domain")
    if by_domain is not None and not (isinstance(by_domain, dict) and all(_counts(v) for v in by_domain.values())):
        return "tokens_per_expert_by_domain must map domains to lists of lists of numbers"
    val = record.get("val_loss")
    if val is not None and not (isinstance(val, dict) and all(_number(v) for v in val.values())):
        return "val_loss must map domains to finite numbers"
    return None


def parse_metrics(data: bytes | str, source: str = "metrics.jsonl") -> MetricsLog:
    """Records from the bytes of a metrics file. Only complete lines count; bad lines are skipped
    (not JSON, nested deeper than lab.json_input allows, not an object, or a field of the wrong type)."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    log = MetricsLog()
    lines = text.split("\n")
    for number, line in enumerate(lines[:-1], 1):  # the last piece has no newline yet (or is empty)
        if not line.strip():
            continue
        try:
            record = loads(line, f"{source} line {number}")
        except JSONInputError as e:
            log.problems.append(f"{e}; skipped")
            continue
        if not isinstance(record, dict):
            log.problems.append(f"{source} line {number}: not a JSON object; skipped")
            continue
        problem = record_problem(record)
        if problem is not None:
            log.problems.append(f"{source} line {number}: {problem}; skipped")
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
            meta = read_json(path / META_FILE)
        except JSONInputError as e:
            metrics.problems.append(f"{e}; ignored")
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
