"""Run a pipeline stage after stage, and resume one that stopped.

A stage is done when its training returned and the state file says so; its `final/` is then the
next stage's source. `--resume` skips the stages that are done, re-makes a transformed checkpoint
only when it is missing (growth and upcycling write atomically, so one that exists is complete),
and continues the stage under way with `lab.train.train(resume=True)` from its newest checkpoint
(a stage killed before its first checkpoint starts over). The merged metrics file is rebuilt from
the stages' own files after every stage and on every exit, so it never holds duplicates.

Under torchrun (`torchrun --nproc_per_node N -m lab pipeline ...`) every process runs the stages'
training together; rank 0 alone grows, upcycles and writes the pipeline's own files, the others wait
for its checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lab.errors import LabError
from lab.json_input import read_json
from lab.checkpoint.io import remove_stale_temporaries
from lab.pipeline.merge import STAGES_DIR as STAGES
from lab.pipeline.merge import stage_dir, write_merged
from lab.pipeline.recipe import Pipeline, load_pipeline
from lab.runs import META_FILE
from lab.train.lock import LOCK_FILE, RunLock
from lab.train.loop import remove_made
from lab.train.state import remove_partial
from lab.atomic_files import write_json_atomically

STATE_FILE = "pipeline_state.json"
INIT_DIR = "init"
BASELINE_DIR = "baseline"
FINAL = "final"


def _write_json(path: Path, value: dict) -> None:
    write_json_atomically(path, value, default=str)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except LabError:
        return None


def check_pipeline_dir(out: Path, pipeline: Pipeline, resume: bool) -> dict:
    """The state to continue from ({"digest", "done": {name: summary}}), after checking `out` suits the request."""
    state = _read_json(out / STATE_FILE)
    if resume:
        if state is None:
            raise LabError(f"{out}: nothing to resume (no {STATE_FILE} of an earlier pipeline there)")
        if state.get("digest") != pipeline.digest():
            raise LabError(f"{out}: holds pipeline {state.get('pipeline')!r} with a different recipe "
                           "(--resume needs the recipe the pipeline started with)")
        return state
    if state is not None:
        raise LabError(f"{out}: already holds pipeline {state.get('pipeline')!r} (pass --resume to continue it); "
                       "or choose another --out")
    if out.exists() and not out.is_dir():
        raise LabError(f"{out}: exists and is not a directory; choose another --out")
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise LabError(f"{out}: exists and is not an empty directory; choose another --out")
    return {"pipeline": pipeline.name, "digest": pipeline.digest(), "done": {}}


def _meta(pipeline: Pipeline, state: dict, out: Path | None = None) -> dict:
    stages = [{"name": s.name, "stage": s.label, "action": s.action, "change": s.describe(),
               "max_steps": s.recipe.train.max_steps, "planned_flops": s.flops, "model": s.config.to_dict(),
               "summary": state["done"].get(s.name)} for s in pipeline.stages]
    meta = {"run": pipeline.name, "kind": "pipeline", "recipe": pipeline.values, "recipe_digest": pipeline.digest(),
            "stages": stages, "planned_flops": pipeline.flops, "started": state.get("started")}
    first = _read_json(stage_dir(out, pipeline.stages[0].name) / META_FILE) if out is not None else None
    if first and isinstance(first.get("environment"), dict):
        meta["environment"] = first["environment"]  # where it ran (world_size: lab.flops.run_phases' devices)
    if pipeline.baseline is not None:
        meta["baseline"] = {"dir": BASELINE_DIR, "max_steps": pipeline.baseline.train.max_steps,
                            "summary": state["done"].get(BASELINE_DIR)}
    return meta


def _source_model(out: Path, stage, init_dir: Path, source: Path) -> Path:
    """The checkpoint a stage trains from: the previous final model grown or upcycled, made once."""
    from lab.derive import grow_checkpoint
    from lab.derive import upcycle_checkpoint

    if (init_dir / "config.json").is_file():
        return init_dir  # made by an earlier attempt (written atomically, so complete)
    init_dir.parent.mkdir(parents=True, exist_ok=True)
    if stage.action == "grow":
        return grow_checkpoint(source, init_dir, stage.plan)
    return upcycle_checkpoint(source, init_dir, stage.plan)


def _train(recipe, run_dir: Path, init_from, progress: bool, resume: bool) -> dict:
    from lab.train import train

    return train(recipe, run_dir, resume=resume, init_from=init_from, progress=progress)


# Under torchrun every process runs the pipeline: each trains every stage (lab.train shards the work),
# only rank 0 writes the pipeline's own files and grows or upcycles; the others wait for its checkpoint.
WAIT_S = 6 * 3600


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _join(device: str):
    """The torchrun process group, joined once for the whole pipeline (lab.train keeps a caller's group)."""
    from lab import distributed

    return distributed.setup(device)


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.is_file():
        if time.monotonic() > deadline:
            raise LabError(f"{path.parent}: rank 0 did not write the {what} within {WAIT_S} s")
        time.sleep(2.0)


def run_pipeline(source, out, *, resume: bool = False, progress: bool = True, report=None) -> dict:
    """Run (or with `resume`, continue) the pipeline recipe `source` into `out`; returns its meta.

    Everything is checked before any work: the recipe (`load_pipeline`) and `out` (a new or empty
    directory, or the same pipeline's with `resume`). Raises lab.train.TrainingStopped when a signal
    stops a stage; the merged metrics are up to date even then. `report` gets one line per stage.
    """
    pipeline = load_pipeline(source)
    out = Path(out).resolve()
    main = _is_main()
    device = pipeline.stages[0].recipe.hardware.device
    state = check_pipeline_dir(out, pipeline, resume)
    # Which runs began in an earlier attempt (lab.train resumes those), decided before anyone writes.
    began = {name: (stage_dir(out, name) / META_FILE).is_file() for name in [s.name for s in pipeline.stages]}
    began[BASELINE_DIR] = (out / BASELINE_DIR / META_FILE).is_file()
    from lab import distributed

    info = _join(device)
    distributed.barrier(info)
    state.setdefault("started", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    report = (report or (lambda line: None)) if main else (lambda line: None)

    def save_state() -> None:
        if main:
            _write_json(out / STATE_FILE, state)
            write_merged(out, pipeline)
            _write_json(out / META_FILE, _meta(pipeline, state, out))

    existed = out.exists()
    lock = RunLock(out)
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            if not resume and _read_json(out / STATE_FILE) is not None:
                raise LabError(f"{out}: another pipeline began there meanwhile; choose another --out")
        except BaseException:
            lock.release()
            distributed.teardown(info)
            raise
        remove_partial(out)
        for stage in pipeline.stages:  # what a killed growth or upcycling step left next to its output
            remove_stale_temporaries(out / INIT_DIR / stage.name)
    try:
        save_state()
        previous_final = None
        for stage in pipeline.stages:
            run_dir = stage_dir(out, stage.name)
            if stage.name not in state["done"]:
                init = None
                if stage.action != "train":
                    init = out / INIT_DIR / stage.name
                    if main:
                        _source_model(out, stage, init, previous_final)
                    else:
                        _wait_for(init / "config.json", f"{stage.action}d model")
                report(f"stage {stage.index + 1}/{len(pipeline.stages)} {stage.name} ({stage.label}): "
                       f"{stage.describe()}")
                state["done"][stage.name] = _train(stage.recipe, run_dir, init, progress, began[stage.name])
                save_state()
            previous_final = run_dir / FINAL
        if pipeline.baseline is not None and BASELINE_DIR not in state["done"]:
            report(f"baseline: the final shape from scratch, {pipeline.baseline.train.max_steps} steps")
            state["done"][BASELINE_DIR] = _train(pipeline.baseline, out / BASELINE_DIR, None, progress,
                                                 began[BASELINE_DIR])
            save_state()
    except LabError:
        # A pipeline that fails before any stage wrote a checkpoint leaves nothing behind (nothing to resume).
        if main and not resume and not state["done"] and not _any_checkpoint(out):
            remove_made(out, keep_dir=existed)
            main = False  # nothing left to save
        raise
    finally:
        if main:
            save_state()
        lock.release()
        distributed.teardown(info)
    return _meta(pipeline, state, out)


def _any_checkpoint(out: Path) -> bool:
    from lab.train.state import CHECKPOINTS

    return any((out / STAGES).glob(f"*/{CHECKPOINTS}/step-*")) or any((out / BASELINE_DIR).glob(f"{CHECKPOINTS}/step-*"))
