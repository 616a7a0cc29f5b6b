"""Where the dashboard's runs come from: a runs directory, uploaded metrics files, and the cache.

A runs directory (default `data/runs`, or `streamlit run app.py -- --runs DIR`, or the sidebar) is
searched for `metrics.jsonl` files (`lab.runs.find_runs`). Each run is read through a cache keyed by
the path and the size and modification time of its files, so a live run's growing metrics are
re-read as soon as they change, and an unchanged run is never read twice. Uploads are parsed as JSON
Lines by `lab.runs.parse_metrics` only (never unpickled), after a size check. Malformed lines are
reported, never fatal; a half-written last line of a live run is left for the next read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import streamlit as st

from lab.data import DATA_DIR
from lab.errors import LabError
from lab.runs import META_FILE, METRICS_FILE, MetricsLog, Run, find_runs, load_run, parse_metrics

DEFAULT_RUNS_DIR = DATA_DIR / "runs"
MAX_UPLOAD_MB = 8  # the same limit as server.maxUploadSize in .streamlit/config.toml
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
MAX_METRICS_BYTES = 64 * 2**20  # a metrics file larger than this is not read (memory bound)
MAX_SHOWN_BYTES = 256 * 2**20  # metrics read for one page, all runs together
MAX_CACHED_BYTES = 512 * 2**20  # metrics kept in the cache shared by every session
MAX_RUNS = 200  # runs listed from one directory
MAX_UPLOADS = 4
UPLOAD_PREFIX = "upload: "
RUNS_DIR_KEY = "runs_dir"
UPLOADS_KEY = "metrics_uploads"


def runs_dir_argument(argv: Sequence[str]) -> str | None:
    """The DIR of `--runs DIR` or `--runs=DIR` in the script's arguments (`streamlit run app.py -- --runs DIR`)."""
    for i, arg in enumerate(argv):
        if arg == "--runs" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--runs="):
            return arg.split("=", 1)[1]
    return None


def _stamp(path: Path) -> tuple:
    """What changes when a run's files change: size and modification time of metrics and meta."""
    out = []
    for name in (METRICS_FILE, META_FILE):
        try:
            s = os.stat(path / name)
            out.append((s.st_size, s.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


@st.cache_resource(show_spinner=False)
def _run_cache() -> dict[str, tuple[tuple, Run]]:
    """path -> (stamp, run), shared by every session: one entry per run, replaced when its files change."""
    return {}


def _read_run(path: str, stamp: tuple) -> Run:
    cache = _run_cache()
    hit = cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    run = load_run(path)
    cache.pop(path, None)
    cache[path] = (stamp, run)  # newest last
    # Bounded by count and by the metrics' bytes: forget the oldest entries first.
    while len(cache) > 1 and (len(cache) > 2 * MAX_RUNS or sum(_size(s) for s, _ in cache.values()) > MAX_CACHED_BYTES):
        cache.pop(next(iter(cache)))
    return run


def _size(stamp: tuple) -> int:
    return stamp[0][0] if stamp[0] else 0


def read_run(path: str | os.PathLike, label: str | None = None) -> Run:
    """The run at `path`, named `label`, from the cache unless its files changed since the last read."""
    path = Path(path)
    stamp = _stamp(path)
    size = _size(stamp)
    if size > MAX_METRICS_BYTES:
        problem = (f"{path / METRICS_FILE}: {size / 2**20:.0f} MB, over the dashboard's limit of "
                   f"{MAX_METRICS_BYTES // 2**20} MB; not read")
        return Run(label or path.name, path, {}, MetricsLog(problems=[problem]))
    run = _read_run(str(path), stamp)
    return replace(run, name=label or run.name)


def parse_upload(name: str, data: bytes) -> Run:
    """A run from the bytes of an uploaded metrics file (JSON Lines only; LabError when too large)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise LabError(f"{name}: {len(data) / 2**20:.1f} MB, over the upload limit of {MAX_UPLOAD_MB} MB")
    if data and not data.endswith(b"\n"):
        data += b"\n"  # an uploaded file is complete: its last line is a record, not a line being written
    log = parse_metrics(data, name)
    if not log.records:
        log.problems.append(f"{name}: no records")
    return Run(UPLOAD_PREFIX + name, Path(name), {}, log)


@st.cache_data(ttl=5, max_entries=16, show_spinner=False)
def discover(root: str) -> dict[str, str]:
    """label -> path of the runs under `root` (labels are paths relative to it); re-listed every 5 s."""
    base = Path(root)
    if not base.is_dir():
        return {}
    found = find_runs(base, max_depth=3)[:MAX_RUNS]
    return {(p.relative_to(base).as_posix() if p != base else p.name): str(p) for p in found}


def runs_root() -> Path:
    return Path(st.session_state.get(RUNS_DIR_KEY) or DEFAULT_RUNS_DIR).expanduser()


def uploaded_runs() -> dict[str, Run]:
    return st.session_state.get("uploaded_runs", {})


def catalog() -> dict[str, Run]:
    """Every run the pages can show: those of the runs directory, then the uploads.

    Runs are read in order until their metrics total `MAX_SHOWN_BYTES`; the rest are listed, unread,
    with a problem saying why (a runs directory of many large runs cannot fill the memory)."""
    runs, budget = {}, MAX_SHOWN_BYTES
    for label, path in discover(str(runs_root())).items():
        size = _size(_stamp(Path(path)))
        if size > budget:
            problem = (f"{label}: not read, the runs before it hold the dashboard's {MAX_SHOWN_BYTES // 2**20} MB "
                       "of metrics; choose a smaller runs directory")
            runs[label] = Run(label, Path(path), {}, MetricsLog(problems=[problem]))
            continue
        budget -= size
        runs[label] = read_run(path, label)
    runs.update(uploaded_runs())
    return runs


def sidebar(default_dir: str | None = None) -> None:
    """The runs directory and the upload box, drawn on every page (called by app.py before navigating)."""
    if RUNS_DIR_KEY not in st.session_state:
        st.session_state[RUNS_DIR_KEY] = default_dir or str(DEFAULT_RUNS_DIR)
    with st.sidebar:
        st.text_input("Runs directory", key=RUNS_DIR_KEY,
                      help="searched for metrics.jsonl files, three levels deep")
        root = runs_root()
        n = len(discover(str(root)))
        if not root.is_dir():
            st.caption(f"`{root}` does not exist.")
        else:
            st.caption(f"{n} run{'s' if n != 1 else ''} found.")
        files = st.file_uploader(f"Or upload a metrics.jsonl (up to {MAX_UPLOAD_MB} MB)", type=["jsonl", "json", "txt"],
                                 accept_multiple_files=True, key=UPLOADS_KEY)
        uploads: dict[str, Run] = {}
        for f in (files or [])[:MAX_UPLOADS]:
            try:
                run = parse_upload(f.name, f.getvalue())
            except LabError as e:
                st.error(str(e))
                continue
            uploads[run.name] = run
        if files and len(files) > MAX_UPLOADS:
            st.warning(f"only the first {MAX_UPLOADS} uploads are used")
        st.session_state["uploaded_runs"] = uploads


def no_runs_message() -> None:
    st.info(f"No runs in `{runs_root()}`. Choose a runs directory in the sidebar, upload a `metrics.jsonl`, "
            "or make a run: `python -m lab train --recipe recipes/tiny.yaml --out runs/tiny`, then "
            "choose `runs`.")


def show_problems(runs: Sequence[Run], limit: int = 5) -> None:
    """The malformed lines met reading the runs, one warning each (the first `limit` per run)."""
    for run in runs:
        for problem in run.metrics.problems[:limit]:
            st.warning(problem)
        if len(run.metrics.problems) > limit:
            st.warning(f"{run.name}: {len(run.metrics.problems) - limit} more problems")


def select_runs(label: str, runs: dict[str, Run], default: Sequence[str], key: str,
                max_selections: int = 8) -> list[Run]:
    """A multiselect over run labels; returns the chosen runs (at most `max_selections`).

    The selection lives in `st.session_state[key]` (so a page can replace it); labels of runs that are
    gone (another runs directory, a removed upload) are dropped from it instead of failing."""
    if key in st.session_state:
        st.session_state[key] = [c for c in st.session_state[key] if c in runs][:max_selections]
    else:
        st.session_state[key] = [d for d in default if d in runs][:max_selections]
    chosen = st.multiselect(label, list(runs), key=key, max_selections=max_selections)
    return [runs[c] for c in chosen]


TOP_LEVEL_GROUP = "(top level)"


def group_of(label: str) -> str:
    """A run's group: the first component of its path in the runs directory (growth, routing, ...)."""
    return label.split("/", 1)[0] if "/" in label else TOP_LEVEL_GROUP


def groups(runs: dict[str, Run]) -> dict[str, list[str]]:
    """group -> labels of its runs, top-level runs first, then the groups in sorted order."""
    out: dict[str, list[str]] = {}
    for label in sorted(runs, key=lambda l: (group_of(l) != TOP_LEVEL_GROUP, group_of(l), l)):
        out.setdefault(group_of(label), []).append(label)
    return out


def style_index(found: dict[str, Run]):
    """run -> its place among every run the dashboard found (`found`, the catalog): the index of its colour
    and dash, the same on every page and whatever else is selected (lab.plots.curves.loss_figure's
    `style_index`)."""
    places = {label: i for i, label in enumerate(found)}
    return lambda run: places.get(run.name, len(places))


def default_runs(runs: dict[str, Run], prefer: Sequence[str], fallback: int = 3) -> list[str]:
    """The labels of `prefer` present in `runs`, else the first `fallback` labels."""
    present = [p for p in prefer if p in runs]
    return present or list(runs)[:fallback]
