"""A figure under controls, for the notebooks: move a slider or pick an option, the figure is rebuilt.

`live_figure(make_figure, controls)` shows `make_figure(**values)` as one `plotly.graph_objects.FigureWidget`
(JupyterLab 4 draws it through anywidget) above its ipywidgets controls; every change calls `make_figure`
again with the controls' values and puts the new traces and layout into the same widget. The function
that makes the figure is the one a static cell would call, so the notebook has no second code path.
In an executed, static copy of a notebook the widget shows its first state; `state["figure"]` holds the
figure of the current values, so a test can move a control and read what changed.
"""

from __future__ import annotations

from typing import Callable

# Every live figure of the kernel, newest last: (controls, state). A test executing a notebook moves them.
LIVE: list[tuple[dict, dict]] = []


def move(control) -> None:
    """Set a control to another value it allows (its minimum, or its maximum if already there; or another
    option): what a student's first touch does."""
    options = getattr(control, "options", None)
    if options:
        labels = [o[1] if isinstance(o, tuple) else o for o in options]
        control.value = next(o for o in labels if o != control.value)
        return
    low, high = control.min, control.max
    if hasattr(control, "base"):  # a log slider's min and max are exponents
        low, high = control.base ** low, control.base ** high
    control.value = low if control.value != low else high


def live_figure(make_figure: Callable, controls: dict) -> tuple[object, dict]:
    """(box, state): the controls (name -> ipywidget with a `value`) above the figure they drive."""
    import ipywidgets as w
    import plotly.graph_objects as go

    def values() -> dict:
        return {name: control.value for name, control in controls.items()}

    state = {"figure": make_figure(**values())}
    widget = go.FigureWidget(state["figure"])

    def redraw(_change=None) -> None:
        state["figure"] = make_figure(**values())
        with widget.batch_update():
            widget.data = []
            widget.add_traces(list(state["figure"].data))
            widget.layout = state["figure"].layout

    for control in controls.values():
        control.observe(redraw, names="value")
    LIVE.append((controls, state))
    return w.VBox([w.HBox(list(controls.values())), widget]), state
