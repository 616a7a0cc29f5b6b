"""Query heads and kv groups (`lab.teach.heads`): which group each q head's weights were trained with,
and which kv head it reads after growth. A mismatch is a head computing against the wrong keys."""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

from lab.plots.style import color, finish


def head_groups_figure(rows: Mapping[str, tuple[object, object]], *, title: str | None = None) -> go.Figure:
    """One row per scheme, one cell per q head: coloured by the kv group its weights were trained with,
    labelled with the kv head it reads now; a cross marks a head that reads another group's kv head.

    `rows[name] = (trained_group, reads_group)`, two equal-length sequences of group indices."""
    names = list(rows)
    fig = go.Figure()
    n_groups = 1 + max(int(max(list(t) + list(r))) for t, r in rows.values()) if rows else 1
    for g in range(n_groups):  # one legend entry per group
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"trained with kv group {g}",
                                 marker=dict(symbol="square", size=14, color=color(g))))
    for name in names:
        trained, reads = [int(v) for v in rows[name][0]], [int(v) for v in rows[name][1]]
        heads = list(range(len(trained)))
        fig.add_trace(go.Scatter(x=heads, y=[name] * len(heads), mode="markers+text", showlegend=False,
                                 marker=dict(symbol="square", size=30, color=[color(t) for t in trained]),
                                 text=[f"{r}" for r in reads], textfont=dict(color="white", size=12),
                                 hovertemplate="q head %{x}: reads kv head %{text}<extra></extra>"))
        wrong = [h for h in heads if trained[h] != reads[h]]
        if wrong:
            fig.add_trace(go.Scatter(x=wrong, y=[name] * len(wrong), mode="markers", showlegend=False,
                                     marker=dict(symbol="x-thin", size=34, line=dict(width=3, color="crimson")),
                                     hoverinfo="skip"))
    fig.update_xaxes(title="q head of the grown model (label: the kv head it reads)", dtick=1)
    fig.update_yaxes(autorange="reversed", type="category")
    return finish(fig, title, height=140 + 70 * len(names))
