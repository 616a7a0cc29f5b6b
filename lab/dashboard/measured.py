"""The compute-savings calculator of AquilaMoE Table 6, fed with a run's measured figures.

Thin adapters from a `lab.runs.Run` to the formulas in `lab.flops` (`run_phases`, `scratch_phase`,
`savings`), which `python -m lab savings --run` uses too: one measured Phase per stage of a pipeline's
merged metrics, and the from-scratch row as the final model on all the pipeline's tokens.
"""

from __future__ import annotations

from lab.flops import Phase, run_phases, whole_run_phase
from lab.runs import Run


def phases_from_run(run: Run) -> list[Phase]:
    """One measured Phase per stage of the run's train records, in order (stages without tokens, FLOPs or
    throughput are left out); a run without stage labels is one phase named after the run."""
    records = [r if r.get("stage") else {**r, "stage": run.name} for r in run.events("train")]
    return run_phases(records, run.world_size)


def scratch_from_run(run: Run) -> Phase | None:
    """A baseline run's measured figures as one from-scratch phase (all its stages together)."""
    return whole_run_phase(run.events("train"), devices=run.world_size)
