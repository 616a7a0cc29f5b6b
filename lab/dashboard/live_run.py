"""Page: start a tiny training, or the tiny EfficientScale pipeline, in the background and watch its
metrics arrive.

One process at a time for the whole server (it is CPU-heavy), a training at most `MAX_STEPS` steps,
written to a private directory made by `tempfile.mkdtemp` (never into the runs directory, which may
hold reference runs, and never at a name another user could predict and plant a link at). Starting
is atomic: a lock makes "is one running? if not, start one" a single step, whatever the clicks. The
charts re-read the metrics every few seconds (each run directory under the job's: a pipeline's stages
and baseline train as runs of their own); the last line being written is simply waited for.

A training logs every step (the shipped recipe with its schedule fitted to the steps asked for), and
the page says where it is: step, tokens/s, time left. When the job ends the page is drawn again, so
its buttons follow the job's real state; a stop asked for reads as a stop (exit 130 is the trainer's
"checkpointed and stopped"), and only a failure shows the end of the log. A finished or stopped run
can be saved into the runs directory (under live/, without weights), where the other pages compare it
with the reference runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import streamlit as st

from lab.dashboard import sources
from lab.paths import RECIPES_DIR, ROOT
from lab.plots.curves import loss_figure
from lab.plots.experts import expert_load_heatmap, n_moe_layers
from lab.runs import find_runs

RECIPES = {"tiny (dense)": "tiny.yaml", "tiny-moe (8 experts, top-2)": "tiny-moe.yaml"}
PIPELINE = "EfficientScale tiny pipeline (all stages and the baseline, minutes)"
PIPELINE_RECIPE = "efficientscale-tiny.yaml"
MAX_STEPS = 300
REFRESH_S = 3


@st.cache_resource
def _job() -> dict:
    """The server's one background run: {"proc": Popen, "dir": Path, "log": Path} once started, and
    "lock", held while a run is checked for and started."""
    return {"lock": threading.Lock()}


def start(recipe: str, steps: int | None) -> bool:
    """Start `python -m lab train` (`steps` steps) or, with `steps=None`, `python -m lab pipeline`; False
    (and nothing started) when a run is going already."""
    import yaml

    job = _job()
    with job["lock"]:
        if _running(job):
            return False
        # mkdtemp: a new directory only this user can enter, at a name nobody can guess in advance.
        home = Path(tempfile.mkdtemp(prefix=f"efficientscale-live-{Path(recipe).stem}-"))
        out, log = home / "run", home / "log.txt"
        recipe_path = RECIPES_DIR / recipe
        if steps is None:
            cmd = ["pipeline", "--recipe", str(recipe_path), "--out", str(out), "--quiet"]
        else:
            # The recipe as shipped, but its schedule spans the steps asked for and it logs every step: a
            # short run's first chart is not empty for its first ten steps.
            steps = min(steps, MAX_STEPS)
            values = yaml.safe_load(recipe_path.read_text(encoding="utf-8"))
            values["train"].update(max_steps=steps, log_every=1)
            values["run"] = f"live-{values.get('run', Path(recipe).stem)}"
            own = home / "recipe.yaml"
            own.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
            cmd = ["train", "--recipe", str(own), "--out", str(out), "--quiet"]
        # O_EXCL and O_NOFOLLOW: the log is a new file, never an existing one or a link's target.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "lab", *cmd], stdout=f, stderr=subprocess.STDOUT,
                                    cwd=ROOT, start_new_session=True)
        job.update(proc=proc, dir=out, log=log, steps=steps, started=time.monotonic(), stopped=False,
                   shown_end=False, saved=None)
        return True


def stop() -> None:
    """SIGTERM: the trainer checkpoints its step and exits 130, which then reads as a stop, not a failure."""
    job = _job()
    if _running(job):
        job["stopped"] = True
        job["proc"].terminate()


def _running(job: dict) -> bool:
    proc = job.get("proc")
    return proc is not None and proc.poll() is None


def running() -> bool:
    return _running(_job())


def last_step(runs: list) -> int:
    return max((r["step"] for run in runs for r in run.events("train")), default=0)


def status(job: dict, runs: list) -> str:
    """The job in words: running (step, tokens/s, time left), finished, stopped as asked, or failed."""
    proc, steps = job["proc"], job.get("steps")
    train = [r for run in runs for r in run.events("train")]
    step = last_step(runs)
    if proc.poll() is None:
        if steps is None or not train:
            return "running"
        elapsed = time.monotonic() - job["started"]
        rate = train[-1].get("tokens_per_s")
        left = (steps - step) * elapsed / step if step else None
        return (f"running: step {step} of {steps}" + (f", {rate:,.0f} tokens/s" if rate else "")
                + (f", about {left:.0f} s left" if left is not None else ""))
    if proc.returncode == 0:
        return f"finished: {step} steps" if steps is not None else "finished: every stage and the baseline"
    if job.get("stopped"):
        return f"stopped at step {step}, as asked (its last checkpoint is saved)"
    return f"failed (exit code {proc.returncode})"


def log_tail(log: Path, lines: int = 20) -> str:
    """The end of the job's log without progress-bar redraws (each a line of carriage returns)."""
    text = log.read_text(errors="replace")
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(line for line in kept if line.strip() and "it/s]" not in line and "s/step" not in line)[-4000:]


def save_into_runs(job: dict) -> Path:
    """Copy the finished job's runs (metrics and meta, no weights) into the runs directory, under live/,
    where the other pages show them beside the reference runs."""
    from lab.run_export import export_run

    out: Path = job["dir"]
    dest = sources.runs_root() / "live" / out.parent.name.removeprefix("efficientscale-live-")
    for path in find_runs(out):
        export_run(path, dest / path.relative_to(out), "a run started from the dashboard's Live run page")
    sources.discover.clear()  # list the runs directory again now, not in up to 5 s
    return dest


def watch() -> None:
    job = _job()
    out: Path = job["dir"]
    proc = job["proc"]
    runs = [sources.read_run(p, p.relative_to(out).as_posix() if p != out else out.name)
            for p in find_runs(out)] if out.is_dir() else []
    runs = [r for r in runs if r.metrics.records]
    said = status(job, runs)
    steps = job.get("steps")
    if proc.poll() is None and steps and last_step(runs):
        st.progress(min(1.0, last_step(runs) / steps), text=said)
    st.caption(f"`{out}`: {said}")
    if not runs:
        st.info("waiting for the first records (a run evaluates before its first step)...")
    else:
        st.plotly_chart(loss_figure(runs, metric="loss", title="training loss"), width="stretch", key="live_loss")
        latest = max(runs, key=lambda r: (Path(r.path) / "metrics.jsonl").stat().st_mtime)  # the one training now
        if latest.events("eval"):
            title = f"{latest.name}: validation loss per domain"
            st.plotly_chart(loss_figure([latest], metric="val_loss", title=title), width="stretch", key="live_val")
        if n_moe_layers(latest):
            st.plotly_chart(expert_load_heatmap(latest), width="stretch", key="live_experts")
    if proc.poll() is not None and said.startswith("failed") and job.get("log"):
        st.code(log_tail(Path(job["log"])))
    if proc.poll() is not None and not job.get("shown_end"):
        # The controls above were drawn while the job ran: draw the page again, so that "start" is enabled
        # and "stop" is not, now that it has ended.
        job["shown_end"] = True
        st.rerun()


def render() -> None:
    st.title("Live run")
    st.markdown("Train a tiny recipe in the background (about a minute per 300 steps on two CPU cores), or run the "
                "tiny EfficientScale pipeline, and watch the metrics arrive: the same `metrics.jsonl` any run writes.")
    c1, c2 = st.columns(2)
    has_pipeline = (RECIPES_DIR / PIPELINE_RECIPE).is_file()
    choice = c1.selectbox("what to run", [*RECIPES, *([PIPELINE] if has_pipeline else [])], key="live_recipe")
    steps = int(c2.number_input("steps", min_value=10, max_value=MAX_STEPS, value=100, step=10, key="live_steps",
                                disabled=choice == PIPELINE, help="the pipeline's steps are its recipe's"))
    b1, b2 = st.columns(2)
    if b1.button("start", disabled=running(), key="live_start"):
        if choice == PIPELINE:
            start(PIPELINE_RECIPE, None)
        else:
            start(RECIPES[choice], steps)
    if b2.button("stop", disabled=not running(), key="live_stop"):
        stop()
    job = _job()
    if "proc" not in job:
        st.caption("No run started yet.")
        return
    if not running():
        if job.get("saved") is not None:
            st.caption(f"saved into `{job['saved']}`: the Loss curves and Expert load pages show it beside the "
                       "other runs")
        elif job["dir"].is_dir() and st.button("save into the runs directory", key="live_save",
                                                help=f"{sources.runs_root()}/live/: compare it with the reference runs"):
            job["saved"] = save_into_runs(job)
            st.rerun()
    if running():
        st.fragment(run_every=REFRESH_S)(watch)()
    else:
        watch()

if __name__ == "__main__":
    render()
