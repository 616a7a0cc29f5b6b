"""What a finished pipeline shows: the loss across each transition, the steps each stage needs to get back
to the previous stage's loss, and the final loss against the from-scratch baseline at equal FLOPs.

All of it is read from the merged metrics (OUT/metrics.jsonl) and the baseline's run
(OUT/baseline/metrics.jsonl), the validation loss being the mean over the corpus's domains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.runs import load_run

TOLERANCE = 1e-6  # relative: float32 evaluations of the same function differ in the last bits


@dataclass
class TransitionRow:
    stage: str
    change: str
    before: float | None  # the previous stage's last validation loss
    after: float | None  # the new model's, before its first step
    # The first evaluation after training began whose loss is at or below `before` (None: none within the
    # stage). A function-preserving transition starts there, but the first steps at the new stage's
    # learning rate (a fresh optimizer, a new warm-up) usually lift the loss above it for a while.
    recovered_at: int | None
    stage_steps: int
    end: float | None  # the stage's last validation loss


@dataclass
class PipelineReport:
    transitions: list[TransitionRow]
    final_loss: float | None
    final_flops: float
    baseline_loss: float | None  # the baseline's evaluation nearest to the pipeline's FLOPs
    baseline_flops: float | None
    baseline_final_loss: float | None

    def format(self) -> str:
        def f(x: float | None) -> str:
            return "-" if x is None else f"{x:.4f}"

        lines = ["| stage | transition | val loss before | right after | steps to recover | stage steps | at stage end |",
                 "|---|---|---|---|---|---|---|"]
        for r in self.transitions:
            rec = "-" if r.recovered_at is None and r.before is None else (
                "not within the stage" if r.recovered_at is None else str(r.recovered_at))
            lines.append(f"| {r.stage} | {r.change} | {f(r.before)} | {f(r.after)} | {rec} | {r.stage_steps} | {f(r.end)} |")
        lines.append("")
        lines.append(f"pipeline final val loss {f(self.final_loss)} at {self.final_flops:.3e} FLOPs")
        if self.baseline_flops is not None:
            lines.append(f"baseline (from scratch) val loss {f(self.baseline_loss)} at {self.baseline_flops:.3e} FLOPs "
                         f"(its last evaluation: {f(self.baseline_final_loss)})")
        return "\n".join(lines)


def _evals(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("event") == "eval" and r.get("val_loss_mean") is not None]


def pipeline_report(out: str | Path) -> PipelineReport:
    """The acceptance figures of the pipeline run in `out`."""
    out = Path(out)
    records = load_run(out).metrics.records
    rows: list[TransitionRow] = []
    names = list(dict.fromkeys(r["stage_name"] for r in records if "stage_name" in r))
    transitions = {r["stage_name"]: r for r in records if r.get("event") == "transition"}
    previous_end = None
    for name in names:
        evals = _evals([r for r in records if r.get("stage_name") == name])
        stage_records = [r for r in records if r.get("stage_name") == name and r.get("event") != "transition"]
        t = transitions.get(name)
        before = t.get("val_loss_mean_before") if t else previous_end
        after = t.get("val_loss_mean") if t else (evals[0]["val_loss_mean"] if evals else None)
        recovered = None
        if before is not None:
            recovered = next((e["stage_step"] for e in evals
                              if e["stage_step"] > 0 and e["val_loss_mean"] <= before * (1 + TOLERANCE)), None)
        label = stage_records[0].get("stage", name) if stage_records else name
        rows.append(TransitionRow(f"{name} ({label})", t.get("change", "") if t else "start",
                                  before if t else None, after, recovered if t else None,
                                  max((r.get("stage_step", 0) for r in stage_records), default=0),
                                  evals[-1]["val_loss_mean"] if evals else None))
        previous_end = evals[-1]["val_loss_mean"] if evals else None
    all_evals = _evals(records)
    final_loss = all_evals[-1]["val_loss_mean"] if all_evals else None
    final_flops = max((r.get("flops") or 0 for r in records), default=0.0)
    baseline_loss = baseline_flops = baseline_final = None
    if (out / "baseline" / "metrics.jsonl").is_file():
        b = _evals(load_run(out / "baseline").metrics.records)
        if b:
            # Its steps were chosen to spend the pipeline's FLOPs, so its evaluation nearest to them.
            at = min(b, key=lambda e: abs((e.get("flops") or 0) - final_flops))
            baseline_loss, baseline_flops = at["val_loss_mean"], at["flops"]
            baseline_final = b[-1]["val_loss_mean"]
    return PipelineReport(rows, final_loss, final_flops, baseline_loss, baseline_flops, baseline_final)
