"""The compute-savings calculator of AquilaMoE Table 6, fed with a run's measured figures.

Thin adapters from a `lab.runs.Run` to the formulas in `lab.flops` (`run_phases`, `scratch_phase`,
`savings`), which `python -m lab savings --run` uses too: one measured Phase per stage of a pipeline's
merged metrics, and the from-scratch row as the final model on all the pipeline's tokens.
"""

from __future__ import annotations

from lab.flops import Phase, run_phases, scratch_phase
from lab.runs import Run


def world_size(run: Run) -> int:
    env = run.meta.get("environment") if isinstance(run.meta.get("environment"), dict) else {}
    size = env.get("world_size", run.meta.get("world_size", 1))
    return size if isinstance(size, int) and size > 0 else 1


def phases_from_run(run: Run) -> list[Phase]:
    """One measured Phase per stage of the run's train records, in order (stages without tokens, FLOPs or
    throughput are left out); a run without stage labels is one phase named after the run."""
    records = [r if r.get("stage") else {**r, "stage": run.name} for r in run.events("train")]
    return run_phases(records, world_size(run))


def scratch_from_phases(phases: list[Phase]) -> Phase:
    """The paper's from-scratch row: the last phase's model and cluster, on the phases' total tokens."""
    return scratch_phase(phases)


def scratch_from_run(run: Run) -> Phase | None:
    """A baseline run's measured figures as one from-scratch phase (all its stages together)."""
    records = [{**r, "stage_name": "from scratch", "stage": "from scratch"} for r in run.events("train")]
    phases = run_phases(records, world_size(run))
    return phases[0] if phases else None
