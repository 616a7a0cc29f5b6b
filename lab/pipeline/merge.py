"""One metrics file for the whole pipeline, derived from the stages' own run directories.

Each stage trains as an ordinary run (OUT/stages/NAME/metrics.jsonl, lab.train.metrics's schema).
OUT/metrics.jsonl is rebuilt from them, never appended to, so a stage that was stopped, resumed and
truncated by its own run can never leave duplicates here: the merged file is a pure function of the
stages' files. In it every record of stage i has

    run         the pipeline's name
    stage       the stage's label (preparation | scale-up | scale-out); stage_name its directory name
    step, tokens, flops, time   cumulative over the stages before it (a loss-vs-FLOPs plot runs on)
    stage_step  the step inside the stage

and before the records of every stage after the first comes one `transition` record (at the
cumulative step where the new stage starts): `kind` (grow | upcycle), `change` (in words),
`from_stage`, `val_loss_before` / `val_loss_mean_before` (the previous stage's last evaluation) and
`val_loss` / `val_loss_mean` (the new model's evaluation before its first step: the loss right after
the transition, on the same validation windows).
"""

from __future__ import annotations

from pathlib import Path

from lab.runs import METRICS_FILE, read_metrics
from lab.atomic_files import write_lines_atomically

STAGES_DIR = "stages"
CUMULATIVE = ("step", "tokens", "flops", "time")


def stage_dir(out: Path, name: str) -> Path:
    return Path(out) / STAGES_DIR / name


def _last_eval(records: list[dict]) -> dict | None:
    evals = [r for r in records if r.get("event") == "eval"]
    return evals[-1] if evals else None


def merged_records(out: Path, pipeline) -> list[dict]:
    """The pipeline's records, stage after stage, as the module docstring says (stages not begun are absent)."""
    merged: list[dict] = []
    offset = dict.fromkeys(CUMULATIVE, 0)
    previous = None  # (stage, its records)
    for stage in pipeline.stages:
        records = read_metrics(stage_dir(out, stage.name) / METRICS_FILE).records
        if not records:
            break
        base = {"run": pipeline.name, "stage": stage.label, "stage_name": stage.name}
        start = next((r for r in records if r.get("event") == "eval" and r.get("step") == 0), None)
        if previous is not None:
            before = _last_eval(previous[1])
            transition = {**base, "event": "transition", "kind": stage.action, "change": stage.describe(),
                          "from_stage": previous[0].name, "stage_step": 0, **offset}
            if before is not None:
                transition.update(val_loss_before=before.get("val_loss"),
                                  val_loss_mean_before=before.get("val_loss_mean"))
            if start is not None:
                transition.update(val_loss=start.get("val_loss"), val_loss_mean=start.get("val_loss_mean"))
            merged.append(transition)
        for r in records:
            merged.append({**r, **base, "stage_step": r.get("step", 0),
                           **{k: offset[k] + (r.get(k) or 0) for k in CUMULATIVE}})
        last = {k: max((r.get(k) or 0) for r in records) for k in CUMULATIVE}
        offset = {k: offset[k] + last[k] for k in CUMULATIVE}
        previous = (stage, records)
    return merged


def write_merged(out: Path, pipeline) -> list[dict]:
    """Rebuild OUT/metrics.jsonl (atomically: a reader never sees half a file)."""
    records = merged_records(out, pipeline)
    write_lines_atomically(Path(out) / METRICS_FILE, records)
    return records
