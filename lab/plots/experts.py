"""Expert load: how a router spreads tokens over experts, per layer, over training and per domain.

Sparse upcycling (AquilaMoE 2.2.2, Komatsuzaki et al.) starts every expert as a copy of the dense MLP,
so the router alone decides who gets which tokens; the load-balancing loss (1 at perfect balance) and
the router z-loss keep that spread even and the logits small. These builders show the spread:
- `expert_load_heatmap`: share of a layer's token assignments per expert over training (train
  records' `tokens_per_expert`, one list of counts per MoE layer);
- `domain_load_figure`: one snapshot, layers x experts, for one or several
  domains (measured live, or from eval records' `tokens_per_expert_by_domain` when a run has them);
- `router_metrics_figure`: load-balancing loss, z-loss and router entropy over time, runs overlaid.
A uniform router gives every expert 1/E of the assignments: the colour scale is centred there (white),
red above, blue below, from 0 to 2/E on every panel (so panels compare).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.plots.curves import METRIC_LABELS, add_stage_marks, series
from lab.plots.style import BALANCE_SCALE, HEATMAP_SCALE, X_LABELS, color, finish, smooth
from lab.runs import Run

ROUTER_METRICS = ("aux_loss", "z_loss", "router_entropy")
DOMAIN_LOAD_FIELD = "tokens_per_expert_by_domain"  # eval records: {domain: [[count per expert] per MoE layer]}


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total if total > 0 else 0.0 for c in counts]


def n_moe_layers(run: Run) -> int:
    """How many MoE layers the run's train records report (0 for a dense run)."""
    return max((len(r["tokens_per_expert"]) for r in run.events("train")
                if isinstance(r.get("tokens_per_expert"), list)), default=0)


def expert_load(run: Run, layer: int, *, x: str = "step", normalize: bool = True
                ) -> tuple[list[float], list[list[float]]]:
    """(xs, load) with load[e][i] the tokens (or share, when `normalize`) expert e got at record i."""
    xs, columns = [], []
    for record in run.events("train"):
        per_layer = record.get("tokens_per_expert")
        if not isinstance(per_layer, list) or layer >= len(per_layer) or not isinstance(per_layer[layer], list):
            continue
        if record.get(x) is None:
            continue
        counts = [float(c) for c in per_layer[layer]]
        xs.append(float(record[x]))
        columns.append(_shares(counts) if normalize else counts)
    n_experts = max((len(c) for c in columns), default=0)
    load = [[c[e] if e < len(c) else 0.0 for c in columns] for e in range(n_experts)]
    return xs, load


def _heatmap(z, x, y, *, zmid: float | None, showscale: bool, colorbar_title: str,
             top: float | None = None) -> go.Heatmap:
    # Shares diverge around the uniform 1/E (white), from 0 to at least 2/E, and further when the data go
    # further (a collapsed router gives one expert half the tokens): the scale covers the data, never clips
    # them. Raw counts use the sequential scale.
    bounds = {}
    # Panels that share one colour bar pass `top`, the largest value of them all.
    if zmid is not None:
        top = max((float(v) for row in z for v in row), default=0.0) if top is None else top
        bounds = dict(zmin=0.0, zmax=min(1.0, max(2 * zmid, top)))
    return go.Heatmap(z=z, x=x, y=y, colorscale=BALANCE_SCALE if zmid is not None else HEATMAP_SCALE,
                      zmid=zmid, showscale=showscale, **bounds,
                      colorbar=dict(title=colorbar_title),
                      hovertemplate="x %{x}<br>expert %{y}<br>%{z:.3f}<extra></extra>")


def expert_load_heatmap(run: Run, *, layer: int | None = None, x: str = "step", normalize: bool = True,
                        title: str | None = None) -> go.Figure:
    """Tokens per expert over training: one heatmap (experts x records) per MoE layer, or only `layer`.

    With `normalize`, each column is the share of that layer's assignments (summing to 1; uniform is
    1/E, the middle of the colour scale, so imbalance shows as bright and dark cells).
    """
    layers = list(range(n_moe_layers(run))) if layer is None else [layer]
    spacing = min(0.12, 0.5 / max(len(layers), 1))  # room for each layer's title
    fig = make_subplots(rows=max(len(layers), 1), cols=1, shared_xaxes=True, vertical_spacing=spacing,
                        subplot_titles=[f"layer {lay}" for lay in layers] or None)
    loads = {lay: expert_load(run, lay, x=x, normalize=normalize) for lay in layers}
    top = max((v for _, load in loads.values() for row in load for v in row), default=0.0)
    for row, lay in enumerate(layers, 1):
        xs, load = loads[lay]
        if not xs:
            continue
        zmid = 1.0 / len(load) if normalize else None
        fig.add_trace(_heatmap(load, xs, list(range(len(load))), zmid=zmid, showscale=row == 1,
                               colorbar_title="share" if normalize else "tokens", top=top), row=row, col=1)
        fig.update_yaxes(title="expert", dtick=1, row=row, col=1)
    fig.update_xaxes(title=X_LABELS.get(x, x), row=max(len(layers), 1), col=1)
    return finish(fig, title or f"{run.name}: tokens per expert", height=max(260, 170 * len(layers) + 100),
                  legend=False)


def domain_load_figure(loads: Mapping[str, Sequence[Sequence[float]]], *, normalize: bool = True,
                       title: str | None = None) -> go.Figure:
    """Side by side, one layers x experts heatmap per domain, on one colour scale: do experts specialise?"""
    names = list(loads)
    fig = make_subplots(rows=1, cols=max(len(names), 1), subplot_titles=names or None, horizontal_spacing=0.04,
                        shared_yaxes=True)
    panels = {name: [_shares(row) if normalize else list(row) for row in loads[name]] for name in names}
    top = max((v for z in panels.values() for row in z for v in row), default=0.0)
    for col, name in enumerate(names, 1):
        z = panels[name]
        if not z:
            continue
        zmid = 1.0 / len(z[0]) if normalize and z[0] else None
        fig.add_trace(_heatmap(z, list(range(len(z[0]))), list(range(len(z))), zmid=zmid, showscale=col == 1,
                               colorbar_title="share" if normalize else "tokens", top=top), row=1, col=col)
        fig.update_xaxes(title="expert", dtick=1, row=1, col=col)
    fig.update_yaxes(title="MoE layer", dtick=1, autorange="reversed", row=1, col=1)
    return finish(fig, title, height=320, legend=False)


def domain_load_steps(run: Run) -> list[int]:
    """The steps of the eval records holding `tokens_per_expert_by_domain`, in order."""
    return [int(r.get("step", 0)) for r in run.events("eval") if _domain_load(r) is not None]


def _domain_load(record: dict) -> dict | None:
    loads = record.get(DOMAIN_LOAD_FIELD)
    if isinstance(loads, dict) and loads and all(isinstance(v, list) for v in loads.values()):
        return loads
    return None


def domain_load_from_run(run: Run, step: int | None = None) -> tuple[int, dict[str, list[list[float]]]] | None:
    """(step, {domain: counts per layer}) from the latest eval record holding `tokens_per_expert_by_domain`
    (at or before `step` when given), or None when the run's records have none."""
    for record in reversed(run.events("eval")):
        loads = _domain_load(record)
        if loads is not None and (step is None or int(record.get("step", 0)) <= step):
            return int(record.get("step", 0)), loads
    return None


def router_metrics_figure(runs: Sequence[Run], *, x: str = "step", metrics: Sequence[str] = ROUTER_METRICS,
                          smoothing: float = 0.0, mark_stages: bool = True, title: str | None = None) -> go.Figure:
    """Load-balancing loss, router z-loss and router entropy over time, one panel each, runs overlaid.

    Balance is 1 for a perfectly even router (the normalised Switch form); entropy is in nats, at most
    ln E for a router that cannot choose.
    """
    log_x = x == "flops"
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=[METRIC_LABELS.get(m, m) for m in metrics])
    for row, metric in enumerate(metrics, 1):
        for i, run in enumerate(runs):
            xs, ys, _ = series(run, metric, x=x)
            if not xs:
                continue
            fig.add_trace(go.Scatter(x=xs, y=smooth(ys, smoothing), mode="lines", name=run.name,
                                     legendgroup=run.name, showlegend=row == 1, line=dict(color=color(i), width=2)),
                          row=row, col=1)
        if mark_stages:
            add_stage_marks(fig, runs, x, log_x, row=row, col=1)
    fig.update_xaxes(type="log" if log_x else "linear")
    fig.update_xaxes(title=X_LABELS.get(x, x), row=len(metrics), col=1)
    return finish(fig, title, height=200 * len(metrics) + 120)
