"""How figures reach the reader: plotly's renderer for notebooks, headless or in JupyterLab.

"plotly_mimetype+notebook" puts two versions in every output: plotly's JSON mime bundle, which
JupyterLab 4 draws with the jupyterlab-plotly extension (no trust needed, survives reopening), and an
HTML version with plotly.js inlined, which any HTML viewer of an executed notebook draws offline.
"""

from __future__ import annotations

RENDERER = "plotly_mimetype+notebook"


def setup_plotly(renderer: str = RENDERER) -> None:
    """Make `fig.show()` and a figure at the end of a cell render with `renderer`."""
    import plotly.io as pio

    pio.renderers.default = renderer
