"""Run an experiment over seeds, resumably: each seed's work is a list of named runs, each an ordinary run
directory (meta.json, metrics.jsonl: lab.runs reads it), and a `measurements.json` of named scalars that
the claims are judged on (lab.experiments.claims).

Layout of an experiment directory OUT:

    OUT/settings.json                 the experiment's name and settings (a later call must match them)
    OUT/seed-<s>/state.json           which runs of seed s are done, with their summaries
    OUT/seed-<s>/init/<run>/          the grown, upcycled or random checkpoint a run starts from
    OUT/seed-<s>/<run>/               the run: lab.train's run directory, lab.pipeline's, or an evaluation
    OUT/seed-<s>/measurements.json    {"experiment", "seed", "values": {"<run>/<quantity>": number}}

Resume: a seed with its measurements.json is finished and skipped; a run that is done is skipped (its training checkpoints are removed once it is done: its
`final/` weights stay); one that began continues with the training loop's own resume
(`lab.train.train(resume=True)`, `lab.pipeline.run_pipeline(resume=True)`) from its newest checkpoint;
a starting checkpoint is made once (growth and upcycling write atomically, so one that exists is whole).
The seed is the only thing that differs between seeds: the recipes' seed (data order, from-scratch
initialisation) and the growth and upcycling plans' seed (random maps, noise, router rows).
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lab.errors import LabError
from lab.runs import META_FILE
from lab.train import Recipe
from lab.atomic_files import write_json_atomically

STATE_FILE = "state.json"
MEASUREMENTS_FILE = "measurements.json"
INIT_DIR = "init"


def seed_dir(out: Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def write_json(path: Path, value: dict) -> None:
    write_json_atomically(path, value, default=str)


def read_json(path: Path) -> dict | None:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@dataclass
class TrainRun:
    """Train `recipe` into OUT/seed-s/<name>; `make_init(dir)` first writes the checkpoint it starts from
    (the recipe's init_from), unless that checkpoint is already there."""

    name: str
    recipe: Recipe
    make_init: Callable[[Path], object] | None = None

    def execute(self, run_dir: Path, progress: bool, report) -> dict:
        from lab.train import train

        began = (run_dir / META_FILE).is_file()
        return train(self.recipe, run_dir, resume=began, progress=progress)


@dataclass
class EvalRun:
    """Evaluate the checkpoint `recipe.init_from` on the validation windows the recipe's training would use,
    before any step, and write it as a run of no steps: meta.json and one `eval` record at step 0."""

    name: str
    recipe: Recipe
    make_init: Callable[[Path], object] | None = None

    def execute(self, run_dir: Path, progress: bool, report) -> dict:
        from lab.experiments.evaluation import write_evaluation_run

        return write_evaluation_run(self.recipe, run_dir)


@dataclass
class PipelineRun:
    """The EfficientScale pipeline (lab.pipeline) of the recipe `values` into OUT/seed-s/<name>."""

    name: str
    values: dict
    make_init = None

    def execute(self, run_dir: Path, progress: bool, report) -> dict:
        from lab.pipeline import run_pipeline
        from lab.pipeline.run import STATE_FILE as PIPELINE_STATE

        began = (run_dir / PIPELINE_STATE).is_file()
        meta = run_pipeline(self.values, run_dir, resume=began, progress=progress, report=report)
        return {"stages": [s["summary"] for s in meta["stages"]], "out_dir": str(run_dir)}


def make_once(make_init, path: Path) -> None:
    """Write a starting checkpoint unless it is there: a leftover without config.json (a write killed by
    something stronger than an exception) is removed first."""
    if (path / "config.json").is_file():
        return
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        make_init(tmp)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def drop_training_state(run_dir: Path) -> None:
    """Remove the training checkpoints (weights and optimizer state) of a finished run, its stages' and its
    baseline's: only a resume reads them, and a finished run is never resumed. `final/` stays whole (its
    files are hard links into, or copies of, the last checkpoint's)."""
    from lab.train.state import CHECKPOINTS

    for path in sorted(Path(run_dir).rglob(CHECKPOINTS)):
        if path.is_dir() and (path.parent / "final").is_dir():
            shutil.rmtree(path)


def run_seed(experiment, settings, out: Path, seed: int, *, progress: bool = True, report=print) -> dict:
    """Every run of one seed (those done before are skipped), then its measurements; returns them.

    A seed whose measurements.json is there is finished (it is written last, atomically) and is not run
    again: an exported experiment (lab.experiments.export, no weights) copied back into OUT resumes with
    the seeds it lacks."""
    directory = seed_dir(out, seed)
    runs = experiment.plan_runs(settings, seed, directory.resolve())
    state = read_json(directory / STATE_FILE)
    measured = read_json(directory / MEASUREMENTS_FILE)
    # An exported seed has measurements and no state; a seed of this directory is finished when its state
    # says every run is done (a run taken out of the state, by hand, is run again).
    if measured is not None and isinstance(measured.get("values"), dict) and (
            state is None or all(run.name in state.get("done", {}) for run in runs)):
        report(f"seed {seed}: measured earlier, skipped")
        return measured["values"]
    directory.mkdir(parents=True, exist_ok=True)
    state = state or {"experiment": experiment.NAME, "seed": seed, "done": {}}
    for i, run in enumerate(runs, 1):
        where = f"seed {seed}, run {i}/{len(runs)} {run.name}"
        if run.name in state["done"]:
            report(f"{where}: done earlier, skipped")
            continue
        if run.make_init is not None:
            make_once(run.make_init, directory / INIT_DIR / run.name)
        report(f"{where}")
        state["done"][run.name] = run.execute(directory / run.name, progress, report)
        write_json(directory / STATE_FILE, state)
        drop_training_state(directory / run.name)
    values = experiment.measure(settings, directory)
    write_json(directory / MEASUREMENTS_FILE, {"experiment": experiment.NAME, "seed": seed, "values": values})
    return values


def run_experiment(experiment, settings, out: Path, seeds: list[int], *, progress: bool = True,
                   report=print) -> dict[int, dict]:
    """Run (or continue) `experiment` under `settings` for `seeds` into `out`; returns each seed's measurements.

    Everything is checked before any work: the source checkpoint, every seed's plans and recipes, and
    `out` (new, empty, or this experiment's under the same settings).
    """
    from lab.checkpoint import read_config
    from lab.experiments.settings import record_settings

    source = settings.path("source")
    try:
        read_config(source)
    except LabError as e:
        raise LabError(f"the source checkpoint: {e}") from None
    tokens, corpus = settings.path("tokens"), settings.path("corpus")
    if tokens is not None and not tokens.is_dir():
        raise LabError(f"tokens {settings.tokens}: no such directory")
    if corpus is not None and not corpus.is_file():
        raise LabError(f"corpus {settings.corpus}: no such file")
    out = Path(out)
    for seed in seeds:
        experiment.plan_runs(settings, seed, seed_dir(out, seed).resolve())  # plans and recipes check themselves
    record_settings(out, experiment.NAME, settings)
    return {seed: run_seed(experiment, settings, out, seed, progress=progress, report=report) for seed in seeds}
