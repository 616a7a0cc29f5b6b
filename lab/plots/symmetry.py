"""FPI's symmetry, watched during training: do the copies of a grown unit stay copies? (bert2BERT, AquilaMoE 2.2.1)

- `similarity_steps_figure`: the unit-by-unit cosine similarity matrix at several training steps, one
  frame per step under a slider (original units first, their copies after: FPI draws two bright
  off-diagonal bands that never fade; AKI does not);
- `copy_similarity_figure`: a summary per initialisation, over steps (e.g. the mean similarity of each
  new unit with the unit it was grown from, or the number of distinct units).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from lab.plots.style import HEATMAP_SCALE, color, finish


def _matrix(m) -> list[list[float]]:
    return m.tolist() if hasattr(m, "tolist") else [list(r) for r in m]


def similarity_steps_figure(snapshots: Mapping[int, object], *, labels: Sequence[str] | None = None,
                            title: str | None = None, zmin: float = -1.0) -> go.Figure:
    """Heatmaps of (n, n) similarity matrices keyed by step, one slider position per step (first shown)."""
    steps = list(snapshots)
    if not steps:
        raise ValueError("no snapshot to draw")

    def heatmap(step: int) -> go.Heatmap:
        return go.Heatmap(z=_matrix(snapshots[step]), x=labels, y=labels, zmin=zmin, zmax=1.0,
                          colorscale=HEATMAP_SCALE, colorbar=dict(title="cosine"),
                          hovertemplate="%{y} vs %{x}: %{z:.4f}<extra></extra>")

    fig = go.Figure(heatmap(steps[0]), frames=[go.Frame(data=[heatmap(s)], name=str(s)) for s in steps])
    fig.update_layout(sliders=[dict(active=0, currentvalue=dict(prefix="step "), pad=dict(t=40),
                                    steps=[dict(label=str(s), method="animate",
                                                args=[[str(s)], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                                     transition=dict(duration=0))])
                                           for s in steps])])
    fig.update_yaxes(autorange="reversed", showticklabels=labels is not None and len(labels) <= 40)
    fig.update_xaxes(showticklabels=labels is not None and len(labels) <= 40)
    return finish(fig, title, height=520, legend=False)


def copy_similarity_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, y_title: str,
                           title: str | None = None) -> go.Figure:
    """Lines of (steps, values), one per initialisation."""
    fig = go.Figure()
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=list(xs), y=list(ys), mode="lines+markers", name=name,
                                 line=dict(color=color(i), width=2), marker=dict(size=5)))
    fig.update_xaxes(title="training step")
    fig.update_yaxes(title=y_title)
    return finish(fig, title, height=380)
