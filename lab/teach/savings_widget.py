"""AquilaMoE's Table 6 under sliders, with the figures linked as they are in a real cluster: change one
and the ones that depend on it follow.

Per phase the sliders are the independent figures: the tokens to train on, the devices, each device's rate
(TFLOP/s) and the utilisation (the share of that rate the training achieves). Tokens per day follow from
them (`lab.flops.Phase.on_cluster`: twice the devices or a twice faster device, twice the tokens per day
at the same utilisation), and the days from tokens per day. So "the preparation ran on a cluster half as
fast" takes twice as long and spends the same compute: the time savings fall, the compute savings stay.

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

# The independent figures of a phase: (name, label); each slider spans a tenth to ten times its start.
FIELDS: tuple[tuple[str, str], ...] = (
    ("tokens_b", "tokens (B)"),
    ("devices", "devices"),
    ("tflops_per_device", "TFLOP/s/device"),
    ("utilisation", "utilisation"),
)


def updated(phase: Phase, field: str, value: float) -> Phase:
    """`phase` with one independent figure changed and the dependent ones following (devices stay integers)."""
    if field == "tokens_b":
        return dataclasses.replace(phase, tokens_b=value)
    if field == "devices":
        return phase.on_cluster(devices=max(1, int(round(value))))
    if field == "tflops_per_device":
        return phase.on_cluster(tflops_per_device=value)
    if field == "utilisation":
        return dataclasses.replace(phase, tokens_per_day_b=phase.tokens_per_day_b * value / phase.utilisation)
    raise ValueError(f"unknown figure {field!r} (known: {', '.join(f for f, _ in FIELDS)})")


def derived_text(phase: Phase) -> str:
    """What follows from a phase's sliders."""
    return (f"tokens/day {phase.tokens_per_day_b:,.1f} B &nbsp; days {phase.days:,.1f} &nbsp; "
            f"compute {phase.tflops * phase.days / 1e3:,.0f} PFLOP/s-days")


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
        derived = w.HTML(derived_text(phase))
        controls = []
        for field, label in FIELDS:
            value = float(getattr(phase, field))
            top = 0.0 if field == "utilisation" else _log10(value) + 1  # a utilisation above 1 is impossible
            slider = w.FloatLogSlider(value=value, base=10, min=_log10(value) - 1, max=top,
                                      step=0.01, description=label, continuous_update=False,
                                      style={"description_width": "110px"}, layout=w.Layout(width="420px"))

            def on_change(change, field=field, index=index) -> None:
                if index is None:
                    state["scratch"] = updated(state["scratch"], field, change["new"])
                    derived.value = derived_text(state["scratch"])
                else:
                    state["phases"][index] = updated(state["phases"][index], field, change["new"])
                    derived.value = derived_text(state["phases"][index])
                redraw()

            slider.observe(on_change, names="value")
            controls.append(slider)
        return w.VBox(controls + [derived])

    tabs = w.Tab(children=[sliders(i, p) for i, p in enumerate(phases)] + [sliders(None, scratch)])
    for i, name in enumerate([p.name for p in phases] + [scratch.name]):
        tabs.set_title(i, name)
    return w.VBox([tabs, text, fig]), state


def _log10(x: float) -> float:
    import math

    return math.log10(x) if x > 0 else 0.0
