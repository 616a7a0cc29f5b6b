"""Page: start a tiny training, or the tiny EfficientScale pipeline, in the background and watch its
metrics arrive.

One process at a time for the whole server (it is CPU-heavy), a training at most `MAX_STEPS` steps,
written to a private directory made by `tempfile.mkdtemp` (never into the runs directory, which may
hold reference runs, and never at a name another user could predict and plant a link at). Starting
is atomic: a lock makes "is one running? if not, start one" a single step, whatever the clicks. The charts re-read the metrics every few seconds (each run directory
under the job's: a pipeline's stages and baseline train as runs of their own); the last line being
written is simply waited for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import streamlit as st

from lab.dashboard import sources
from lab.data import DATA_DIR
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
    job = _job()
    with job["lock"]:
        if _running(job):
            return False
        # mkdtemp: a new directory only this user can enter, at a name nobody can guess in advance.
        home = Path(tempfile.mkdtemp(prefix=f"efficientscale-live-{Path(recipe).stem}-"))
        out, log = home / "run", home / "log.txt"
        recipe_path = DATA_DIR.parent / "recipes" / recipe
        if steps is None:
            cmd = ["pipeline", "--recipe", str(recipe_path), "--out", str(out), "--quiet"]
        else:
            cmd = ["train", "--recipe", str(recipe_path), "--out", str(out), "--max-steps",
                   str(min(steps, MAX_STEPS))]
        # O_EXCL and O_NOFOLLOW: the log is a new file, never an existing one or a link's target.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "lab", *cmd], stdout=f, stderr=subprocess.STDOUT,
                                    cwd=DATA_DIR.parent, start_new_session=True)
        job.update(proc=proc, dir=out, log=log)
        return True


def _running(job: dict) -> bool:
    proc = job.get("proc")
    return proc is not None and proc.poll() is None


def running() -> bool:
    return _running(_job())


def watch() -> None:
    job = _job()
    out: Path = job["dir"]
    proc = job["proc"]
    status = "running" if proc.poll() is None else f"finished (exit code {proc.returncode})"
    st.caption(f"`{out}`: {status}")
    runs = [sources.read_run(p, p.relative_to(out).as_posix() if p != out else out.name)
            for p in find_runs(out)] if out.is_dir() else []
    runs = [r for r in runs if r.metrics.records]
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
    if proc.poll() is not None and job.get("log") and proc.returncode not in (0, None):
        st.code(Path(job["log"]).read_text(errors="replace")[-2000:])


def render() -> None:
    st.title("Live run")
    st.markdown("Train a tiny recipe in the background (about a minute per 300 steps on two CPU cores), or run the "
                "tiny EfficientScale pipeline, and watch the metrics arrive: the same `metrics.jsonl` any run writes.")
    c1, c2 = st.columns(2)
    has_pipeline = (DATA_DIR.parent / "recipes" / PIPELINE_RECIPE).is_file()
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
        _job()["proc"].terminate()  # SIGTERM: the trainer checkpoints its step and exits
    if "proc" not in _job():
        st.caption("No run started yet.")
        return
    if running():
        st.fragment(run_every=REFRESH_S)(watch)()
    else:
        watch()


if __name__ == "__main__":
    render()
