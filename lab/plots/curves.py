"""Loss curves: several runs overlaid, by step, tokens or FLOPs, with the pipeline's stages marked.

Builders read `lab.runs.Run` objects (their `metrics.records`, schema in `lab/train/metrics.py`) and
return plotly figures; they never touch files. The x axis is the record's cumulative `step`, `tokens`
or `flops` (a pipeline's merged metrics count them across stages, so one curve runs from preparation
through Scale-Up and Scale-Out, AquilaMoE Figure 1). FLOPs are drawn on a log axis by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import plotly.graph_objects as go

from lab.plots.style import X_LABELS, finish, named_color, run_color_dash, run_line, smooth
from lab.runs import Run

X_AXES = ("step", "tokens", "flops", "time")
EVAL_METRICS = ("val_loss", "val_loss_mean")
# Train-record fields worth plotting, in the order a menu shows them; others numeric are found too.
TRAIN_METRICS = ("loss", "lm_loss", "lr", "grad_norm", "tokens_per_s", "mfu", "aux_loss", "z_loss",
                 "router_entropy")
METRIC_LABELS = {"loss": "training loss", "lm_loss": "LM loss", "val_loss": "validation loss",
                 "val_loss_mean": "validation loss (mean over domains)", "lr": "learning rate",
                 "grad_norm": "gradient norm", "tokens_per_s": "tokens / s", "mfu": "MFU",
                 "aux_loss": "load-balancing loss", "z_loss": "router z-loss",
                 "router_entropy": "router entropy (nats)",
                 "load_cv": "load CV (std / mean of tokens per expert)"}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_event(metric: str) -> str:
    """The event kind whose records carry `metric`."""
    return "eval" if metric in EVAL_METRICS else "train"


def series(run: Run, metric: str, *, x: str = "step", domain: str | None = None
           ) -> tuple[list[float], list[float], list[str]]:
    """(xs, ys, stages) of one metric of one run; records missing either value are left out.

    `metric="val_loss"` needs a `domain` (the per-domain dict of eval records).
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    xs, ys, stages = [], [], []
    for record in run.events(metric_event(metric)):
        value = record.get(metric)
        if metric == "val_loss":
            value = value.get(domain) if isinstance(value, dict) else None
        xv, yv = _number(record.get(x)), _number(value)
        if xv is None or yv is None:
            continue
        xs.append(xv)
        ys.append(yv)
        stages.append(str(record.get("stage", "")))
    return xs, ys, stages


def val_domains(runs: Iterable[Run]) -> list[str]:
    """Every validation domain found in the runs' eval records, in first-seen order."""
    seen: dict[str, None] = {}
    for run in runs:
        for record in run.events("eval"):
            if isinstance(record.get("val_loss"), dict):
                seen.update(dict.fromkeys(record["val_loss"]))
    return list(seen)


def available_metrics(runs: Iterable[Run]) -> list[str]:
    """The plottable metrics present in the runs: known ones first, then other numeric train fields."""
    runs = list(runs)
    present: dict[str, None] = {}
    skip = {"step", "tokens", "flops", "time", "stage_step"}  # axes and bookkeeping, not metrics
    for run in runs:
        for record in run.events("train"):
            present.update((k, None) for k, v in record.items() if k not in skip and _number(v) is not None)
        for record in run.events("eval"):
            present.update((k, None) for k in EVAL_METRICS if k in record)
    known = [m for m in (*TRAIN_METRICS, *EVAL_METRICS) if m in present]
    return known + sorted(m for m in present if m not in known)


def stage_boundaries(run: Run, x: str = "step") -> list[tuple[float, str]]:
    """(x, stage) where each stage after the first begins: a `transition` record's position when the
    pipeline wrote one (its `to` or `stage` field names the stage entered), else the first record of
    the new stage."""
    marks: dict[str, float] = {}
    for record in run.events("transition"):
        stage, xv = record.get("to") or record.get("stage"), _number(record.get(x))
        if stage and xv is not None:
            marks.setdefault(str(stage), xv)
    first_stage = None
    for record in run.metrics.records:
        stage, xv = record.get("stage"), _number(record.get(x))
        if record.get("event") == "transition" or stage is None or xv is None:
            continue
        if first_stage is None:
            first_stage = stage
        elif stage != first_stage:
            marks.setdefault(str(stage), xv)
    marks.pop(str(first_stage), None)
    return sorted(((v, s) for s, v in marks.items()), key=lambda m: m[0])


def add_stage_marks(fig: go.Figure, runs: Sequence[Run], x: str, log_x: bool, row: int | None = None,
                    col: int | None = None) -> None:
    """Dashed vertical lines at stage boundaries, labelled with the stage entered."""
    done: set[tuple[float, str]] = set()
    for run in runs:
        for xv, stage in stage_boundaries(run, x):
            if (xv, stage) in done or (log_x and xv <= 0):
                continue
            done.add((xv, stage))
            kw = {} if row is None else {"row": row, "col": col}
            fig.add_vline(x=xv, line_dash="dash", line_width=1, line_color=named_color(stage, 0), **kw)
            # Annotations on a log axis are placed by log10 of the value, shapes by the value itself.
            fig.add_annotation(x=math.log10(xv) if log_x else xv, y=1.0, yref="y domain", text=stage,
                               showarrow=False, xanchor="left", yanchor="top", font=dict(size=11),
                               **kw)


def loss_figure(runs: Sequence[Run], *, x: str = "step", metric: str = "loss",
                domains: Sequence[str] | None = None, smoothing: float = 0.0, mark_stages: bool = True,
                log_x: bool | None = None, log_y: bool = False, title: str | None = None,
                style_index: Callable[[Run], int] | None = None) -> go.Figure:
    """One metric of several runs overlaid against step, tokens, FLOPs or time.

    `metric="val_loss"` draws one line per (run, domain) for `domains` (default: all found); any other
    metric one line per run. `smoothing` in [0, 1) is the EMA weight; the raw values stay visible,
    faint, behind the smoothed line. `log_x` defaults to True for FLOPs. Stage boundaries of pipeline
    runs are marked when `mark_stages`. `style_index(run)` picks each run's colour and dash (default: its
    place in `runs`); indices that are distinct and do not depend on the selection (the dashboard's: the
    run's place among all runs found) keep a run's look the same from one figure to the next.
    """
    log_x = (x == "flops") if log_x is None else log_x

    def index(position: int, run: Run) -> int:
        return position if style_index is None else style_index(run)

    fig = go.Figure()
    # Per-domain lines: the colour names the domain, the dash the run; otherwise the colour names the run.
    if metric == "val_loss":
        wanted = list(domains) if domains is not None else val_domains(runs)
        lines = [(run, d, f"{run.name} · {d}" if len(runs) > 1 else d, named_color(d, k), *run_line(index(r, run)))
                 for r, run in enumerate(runs) for k, d in enumerate(wanted)]
    else:
        lines = [(run, None, run.name, *run_color_dash(index(r, run)), "circle") for r, run in enumerate(runs)]
    for run, domain, name, c, dash, symbol in lines:
        xs, ys, stages = series(run, metric, x=x, domain=domain)
        if not xs:
            continue
        hover = [f"stage {s}" for s in stages]
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, legendgroup=name, showlegend=False,
                                     line=dict(color=c, width=1), opacity=0.25, hoverinfo="skip"))
            ys = smooth(ys, smoothing)
        mode = "lines+markers" if metric_event(metric) == "eval" else "lines"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode=mode, name=name, legendgroup=name, text=hover,
                                 line=dict(color=c, width=2, dash=dash), marker=dict(size=6, symbol=symbol)))
    if mark_stages:
        add_stage_marks(fig, runs, x, log_x)
    fig.update_xaxes(title=X_LABELS.get(x, x), type="log" if log_x else "linear")
    fig.update_yaxes(title=METRIC_LABELS.get(metric, metric), type="log" if log_y else "linear")
    finish(fig, title)
    # One hover box with every visible line's value at the pointer's x (the nearest point of each line).
    fig.update_layout(hovermode="x unified")
    return fig
