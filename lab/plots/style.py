"""One look for every figure of the lab, and the small data helpers the builders share.

Colours are fixed per name (a run, a domain, a stage keeps its colour across figures and pages), so a
reader can compare two plots at a glance. `smooth` is the exponential moving average of TensorBoard,
debiased so the first points are not dragged towards zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

# Colour-blind-safe qualitative palette (Okabe & Ito), then plotly's defaults for more names.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
                            "#000000", "#636EFA", "#EF553B", "#00CC96", "#AB63FA")
STAGE_COLORS: dict[str, str] = {"preparation": "#0072B2", "pretrain": "#0072B2", "scale-up": "#E69F00",
                                "scale-out": "#009E73", "from scratch": "#7f7f7f"}
DOMAIN_COLORS: dict[str, str] = {"english": "#0072B2", "chinese": "#D55E00", "code": "#009E73",
                                 "arithmetic": "#CC79A7"}
HEATMAP_SCALE = "Viridis"
BALANCE_SCALE = "RdBu_r"  # diverging: white at the uniform share
TEMPLATE = "plotly_white"

X_LABELS: dict[str, str] = {"step": "step", "tokens": "tokens seen", "flops": "training FLOPs", "time": "wall-clock time (s)"}


DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS: tuple[str, ...] = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "hexagon")


def run_line(index: int) -> tuple[str, str]:
    """(dash, marker symbol) of the `index`-th run where the colour names something else (a domain): no two
    of the first len(DASHES) x len(SYMBOLS) = 48 runs look alike."""
    return DASHES[index % len(DASHES)], SYMBOLS[(index // len(DASHES)) % len(SYMBOLS)]


def run_color_dash(index: int) -> tuple[str, str]:
    """(colour, dash) of the `index`-th run where the colour names the run: the palette first, then the same
    colours dashed, so no two of the first len(PALETTE) x len(DASHES) = 72 runs look alike."""
    return color(index), DASHES[(index // len(PALETTE)) % len(DASHES)]


def color(index: int) -> str:
    """The `index`-th colour of the palette (cycling)."""
    return PALETTE[index % len(PALETTE)]


def named_color(name: str, index: int) -> str:
    """A domain's or stage's fixed colour, else the palette's `index`-th."""
    return DOMAIN_COLORS.get(name) or STAGE_COLORS.get(name) or color(index)


def finish(fig: go.Figure, title: str | None = None, *, height: int = 420, legend: bool = True) -> go.Figure:
    """Apply the lab's template, margins and legend placement; returns `fig` for chaining."""
    fig.update_layout(template=TEMPLATE, title=title, height=height, showlegend=legend,
                      margin=dict(l=60, r=20, t=60 if title else 30, b=50),
                      legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02))
    return fig


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average: s_t = w s_(t-1) + (1 - w) v_t, divided by 1 - w^t.

    `weight` in [0, 1): 0 returns the values unchanged; non-finite values pass through unsmoothed and do
    not enter the average (a NaN loss stays visible as a gap instead of poisoning every later point).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    if weight == 0.0:
        return list(values)
    out, avg, n = [], 0.0, 0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        avg = weight * avg + (1.0 - weight) * v
        out.append(avg / (1.0 - weight ** n))
    return out
