"""Small weight matrices drawn as annotated heatmaps: the paper's Figure 1 (FPI on one MLP), cell by cell."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.plots.style import finish


def matrices_figure(matrices: Mapping[str, object], *, title: str | None = None, decimals: int = 2) -> go.Figure:
    """One heatmap per named matrix (tensors or nested lists, rows x columns), each cell labelled with its
    value, on one shared diverging colour scale centred at 0 so that a copied or halved weight reads at a glance."""
    names = list(matrices)
    rows = [[float(v) for v in row] for name in names for row in _rows(matrices[name])]
    bound = max((abs(v) for row in rows for v in row), default=1.0) or 1.0
    fig = make_subplots(rows=1, cols=max(len(names), 1), subplot_titles=names or None, horizontal_spacing=0.06)
    for col, name in enumerate(names, 1):
        z = _rows(matrices[name])
        fig.add_trace(go.Heatmap(z=z, text=[[f"{v:.{decimals}f}" for v in row] for row in z], texttemplate="%{text}",
                                 colorscale="RdBu_r", zmin=-bound, zmax=bound, showscale=False, xgap=1, ygap=1,
                                 hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(autorange="reversed", dtick=1, row=1, col=col)
        fig.update_xaxes(dtick=1, row=1, col=col)
    return finish(fig, title, height=300, legend=False)


def _rows(matrix) -> list[list[float]]:
    values = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    if values and not isinstance(values[0], list):  # a vector: one row
        values = [values]
    return [[float(v) for v in row] for row in values]
