"""The compute savings of EfficientScale against training from scratch (AquilaMoE Table 6).

`savings_figure` draws, for the phases of a pipeline stacked in one bar and the from-scratch run in
another: wall-clock days, device-days (devices x days) and compute (the cluster's TFLOP/s x days, in
PFLOP/s-days: one PFLOP/s sustained for a day is 8.64e19 FLOPs).
The ratios of the first and last panels are the paper's two factors, computed by `lab.flops.savings`
(4.12 and 3.35 for the paper's figures); the figure never recomputes them another way.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.flops import Phase, savings
from lab.plots.style import finish, named_color

PANELS = ("days", "device-days", "compute (PFLOP/s-days)")


def _panel_values(phase: Phase) -> tuple[float, float, float]:
    return phase.days, phase.devices * phase.days, phase.tflops * phase.days / 1e3


def savings_figure(phases: Sequence[Phase], scratch: Phase, *, title: str | None = None) -> go.Figure:
    """Three panels (days, device-days, PFLOP/s-days): the phases stacked against training from scratch,
    each panel labelled with scratch / pipeline. The title holds `savings(phases, scratch)`."""
    time_factor, compute_factor = savings(list(phases), scratch)
    fig = make_subplots(rows=1, cols=3, subplot_titles=PANELS, horizontal_spacing=0.08)
    bars = ["EfficientScale", scratch.name]
    for i, phase in enumerate(phases):
        for col, value in enumerate(_panel_values(phase), 1):
            fig.add_trace(go.Bar(x=[bars[0]], y=[value], name=phase.name, legendgroup=phase.name,
                                 showlegend=col == 1, marker_color=named_color(phase.name, i),
                                 hovertemplate=f"{phase.name}: %{{y:,.1f}}<extra></extra>"), row=1, col=col)
    totals = [sum(v) for v in zip(*(_panel_values(p) for p in phases))] if phases else [0.0] * 3
    for col, (value, total) in enumerate(zip(_panel_values(scratch), totals), 1):
        fig.add_trace(go.Bar(x=[bars[1]], y=[value], name=scratch.name, legendgroup=scratch.name,
                             showlegend=col == 1, marker_color=named_color(scratch.name, 3),
                             hovertemplate=f"{scratch.name}: %{{y:,.1f}}<extra></extra>"), row=1, col=col)
        ratio = value / total if total > 0 else float("nan")
        fig.add_annotation(x=bars[1], y=value, text=f"×{ratio:.2f}", showarrow=False, yanchor="bottom",
                           font=dict(size=13), row=1, col=col)
    fig.update_layout(barmode="stack")
    return finish(fig, title or f"time savings ×{time_factor:.2f}, compute savings ×{compute_factor:.2f}",
                  height=400)
