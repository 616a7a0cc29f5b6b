"""Layer-to-layer similarity of a trained model (`lab.teach.layers`): why interpolation copies a neighbour."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.plots.style import HEATMAP_SCALE, finish


def layer_similarity_figure(weight_similarity, substitution_losses, *, title: str | None = None) -> go.Figure:
    """Left: cosine similarity of layers' weights (L x L). Right: validation loss when layer i (row)
    computes with layer j's weights (column); the diagonal is the trained model itself."""
    w = weight_similarity.tolist() if hasattr(weight_similarity, "tolist") else weight_similarity
    s = substitution_losses.tolist() if hasattr(substitution_losses, "tolist") else substitution_losses
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16,
                        subplot_titles=("weight similarity (cosine)", "loss when layer i uses layer j's weights"))
    labels = list(range(len(w)))
    fig.add_trace(go.Heatmap(z=w, x=labels, y=labels, colorscale=HEATMAP_SCALE, texttemplate="%{z:.2f}",
                             colorbar=dict(x=0.42, title="cos"),
                             hovertemplate="layer %{y} vs %{x}: %{z:.3f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=s, x=labels, y=labels, colorscale="Viridis_r",
                             texttemplate="%{z:.2f}", colorbar=dict(title="loss"),
                             hovertemplate="layer %{y} runs layer %{x}'s weights: loss %{z:.3f}<extra></extra>"),
                  row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(title="layer j", dtick=1, row=1, col=col)
        fig.update_yaxes(title="layer i", dtick=1, autorange="reversed", row=1, col=col)
    return finish(fig, title, height=420, legend=False)
