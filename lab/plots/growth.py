"""Scale-Up at a glance: which source layer each new layer copies, the loss right after growth, sizes.

- `layer_order_figure`: for each depth rule (stacking, interpolation, identity blocks), the source layer
  each layer of the deeper model copies (AquilaMoE 2.2.1 and Figure 2: interpolation repeats each layer
  in place, 0,0,1,1,2,2; stacking repeats the whole stack, 0,1,2,0,1,2); identity blocks are hatched.
- `init_loss_figure`: validation loss at initialisation per method against the source's (paper
  Table 1: FPI width-only keeps it exactly, depth growth and AKI raise it, random init is far above).
- `parameter_figure`: parameter counts of source and grown models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from lab.plots.style import color, finish


def layer_order_figure(orders: Mapping[str, Sequence[int]], *, inserted: Mapping[str, set[int]] | None = None,
                       title: str | None = None) -> go.Figure:
    """One row per rule, one cell per new layer, coloured and labelled by the source layer it copies.

    `inserted[rule]` holds the new layers that are identity blocks (their residual writers zeroed);
    their labels read "id".
    """
    names = list(orders)
    width = max((len(o) for o in orders.values()), default=0)
    z, text = [], []
    for name in names:
        order = list(orders[name])
        zeroed = (inserted or {}).get(name, set())
        z.append(order + [None] * (width - len(order)))
        text.append([f"{s} id" if l in zeroed else str(s) for l, s in enumerate(order)] + [""] * (width - len(order)))
    fig = go.Figure(go.Heatmap(z=z, x=list(range(width)), y=names, text=text, texttemplate="%{text}",
                               colorscale="Blues", showscale=False, xgap=2, ygap=2,
                               hovertemplate="new layer %{x}<br>copies source layer %{z}<extra>%{y}</extra>"))
    fig.update_xaxes(title="layer of the grown model", dtick=1)
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, height=120 + 50 * len(names), legend=False)


def init_loss_figure(losses: Mapping[str, float], *, source_loss: float | None = None, relative: bool = False,
                     title: str | None = None) -> go.Figure:
    """Bars of validation loss at initialisation per method, with the source model's loss as a line.

    With `relative` (and a `source_loss`) each bar is the loss above the source's, from 0: differences of
    a few hundredths stay visible next to losses of 3 or 4, and the axis still starts at zero.
    """
    names = list(losses)
    if relative and source_loss is None:
        raise ValueError("relative bars need the source's loss")
    heights = [losses[n] - source_loss if relative else losses[n] for n in names]
    text = [f"{losses[n]:.3f} ({losses[n] - source_loss:+.3f})" if relative else f"{losses[n]:.3f}" for n in names]
    fig = go.Figure(go.Bar(x=names, y=heights, marker_color=[color(i) for i in range(len(names))],
                           text=text, textposition="outside"))
    if relative:
        fig.add_hline(y=0, line_dash="dash", annotation_text=f"source {source_loss:.3f}",
                      annotation_position="top left")
        fig.update_yaxes(title="validation loss at init − source's (nats)")
    else:
        if source_loss is not None:
            fig.add_hline(y=source_loss, line_dash="dash", annotation_text=f"source {source_loss:.3f}",
                          annotation_position="top left")
        fig.update_yaxes(title="validation loss at init (nats)")
    return finish(fig, title, height=360, legend=False)


def parameter_figure(counts: Mapping[str, float], *, title: str | None = None) -> go.Figure:
    """Horizontal bars of parameter counts (e.g. {"source": n, "grown": m})."""
    names = list(counts)
    fig = go.Figure(go.Bar(y=names, x=[counts[n] for n in names], orientation="h",
                           marker_color=[color(i) for i in range(len(names))],
                           text=[f"{counts[n]:,.0f}" for n in names], textposition="auto"))
    fig.update_xaxes(title="parameters")
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, height=100 + 45 * len(names), legend=False)
