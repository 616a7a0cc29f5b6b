"""AquilaMoE's Table 6 under sliders: change any figure of any phase and watch both savings factors move.

Every number shown comes from `lab.flops.savings` and every bar from `lab.plots.savings.savings_figure`
(no second formula here): a slider builds new `Phase`s, the figure is rebuilt, and its bars and titles
are copied into one `plotly.graph_objects.FigureWidget` (JupyterLab 4 draws it through `anywidget`).

Invariant: with the sliders at their initial positions the factors are `savings(phases, scratch)`,
4.12 and 3.35 for the paper's table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lab.flops import Phase, savings

# (field, label, slider range as a multiple of the initial value)
FIELDS: tuple[tuple[str, str], ...] = (
    ("tokens_b", "tokens (B)"),
    ("tokens_per_day_b", "tokens/day (B)"),
    ("devices", "devices"),
    ("gflops_per_device", "GFLOPS/device"),
)


def updated(phase: Phase, **values) -> Phase:
    """`phase` with some figures changed (devices stay integers)."""
    if "devices" in values:
        values["devices"] = int(round(values["devices"]))
    return dataclasses.replace(phase, **values)


def factors_text(phases: Sequence[Phase], scratch: Phase) -> str:
    time_factor, compute_factor = savings(list(phases), scratch)
    return f"<b>time savings ×{time_factor:.2f}</b> &nbsp; <b>compute savings ×{compute_factor:.2f}</b>"


def savings_explorer(phases: Sequence[Phase], scratch: Phase):
    """An ipywidgets box: one tab of sliders per phase (and one for the from-scratch run), the factors in
    a line of text, and the `savings_figure` as a FigureWidget, all updated on every slider move.
    Returns (box, state) where state["phases"], state["scratch"] hold the current phases."""
    import ipywidgets as w
    import plotly.graph_objects as go

    from lab.plots.savings import savings_figure

    state = {"phases": list(phases), "scratch": scratch}
    fig = go.FigureWidget(savings_figure(state["phases"], scratch))
    text = w.HTML(factors_text(state["phases"], scratch))

    def redraw(_change=None) -> None:
        new = savings_figure(state["phases"], state["scratch"])
        with fig.batch_update():
            for trace, fresh in zip(fig.data, new.data):
                trace.y = fresh.y
            fig.layout.annotations = new.layout.annotations
            fig.layout.title = new.layout.title
        text.value = factors_text(state["phases"], state["scratch"])

    def sliders(index: int | None, phase: Phase) -> w.VBox:
        controls = []
        for field, label in FIELDS:
            value = float(getattr(phase, field))
            slider = w.FloatLogSlider(value=value, base=10, min=_log10(value) - 1, max=_log10(value) + 1,
                                      step=0.01, description=label, continuous_update=False,
                                      style={"description_width": "110px"}, layout=w.Layout(width="420px"))

            def on_change(change, field=field, index=index) -> None:
                if index is None:
                    state["scratch"] = updated(state["scratch"], **{field: change["new"]})
                else:
                    state["phases"][index] = updated(state["phases"][index], **{field: change["new"]})
                redraw()

            slider.observe(on_change, names="value")
            controls.append(slider)
        return w.VBox(controls)

    tabs = w.Tab(children=[sliders(i, p) for i, p in enumerate(phases)] + [sliders(None, scratch)])
    for i, name in enumerate([p.name for p in phases] + [scratch.name]):
        tabs.set_title(i, name)
    return w.VBox([tabs, text, fig]), state


def _log10(x: float) -> float:
    import math

    return math.log10(x) if x > 0 else 0.0
