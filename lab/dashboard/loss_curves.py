"""Page: loss curves of several runs overlaid, by step, tokens or FLOPs, stages marked, per domain.

With "follow live runs" on, the charts re-read the runs every few seconds (only files whose size or
modification time changed are read again), so a job's curves grow as it trains.
"""

from __future__ import annotations

import streamlit as st

from lab.dashboard import sources
from lab.dashboard.page_intro import intro
from lab.dashboard.view_state import flag, number_in, one_of, restore, some_of
from lab.plots.curves import METRIC_LABELS, available_metrics, loss_figure, stage_boundaries, val_domains

PREFER = ("efficientscale-tiny", "efficientscale-tiny-baseline")
REFRESH_S = 5


def charts(labels: list[str], x: str, metric: str, smoothing: float, mark: bool, log_x: bool, log_y: bool) -> None:
    found = sources.catalog()
    runs = [r for label, r in found.items() if label in labels]
    if not runs:
        return
    axes = dict(x=x, mark_stages=mark, log_x=log_x, log_y=log_y, style_index=sources.style_index(found))
    st.plotly_chart(loss_figure(runs, metric=metric, smoothing=smoothing, title=METRIC_LABELS.get(metric, metric),
                                **axes), width="stretch", key="main")
    domains = val_domains(runs)
    if domains:
        restore("domains", some_of(domains))
        chosen = st.multiselect("validation domains", domains, default=domains, key="domains")
        figure = loss_figure(runs, metric="val_loss", domains=chosen, title="validation loss per domain", **axes)
        st.plotly_chart(figure, width="stretch", key="domain")
    else:
        st.caption("No eval records with per-domain validation loss in these runs.")
    sources.show_problems(runs)


def render() -> None:
    st.title("Loss curves")
    intro("Runs overlaid by step, tokens or training FLOPs, with the stage transitions of a pipeline marked. "
          "Compare a pipeline with its from-scratch baseline at equal FLOPs (the paper's claim), or growth "
          "methods and routing variants with each other.",
          {"loss": "training cross-entropy of the last batch, in nats per token (ln 4096 = 8.32 is a uniform "
                   "guess over the shipped tokenizer's vocabulary)",
           "validation loss": "mean cross-entropy over the shipped validation windows, per domain and their mean "
                              "(nats per token)",
           "tokens": "training tokens seen so far (batch x sequence length x steps, over every process)",
           "wall-clock": "seconds since the run started (a pipeline's stages one after the other), as measured "
                         "on the machine that trained it",
           "FLOPs": "training FLOPs so far: 6 x matmul parameters + 12 x layers x heads x head dim x sequence "
                    "length per token (PaLM's count; an MoE counts its top-k experts only)",
           "stage transition": "a growth (Scale-Up) or upcycling (Scale-Out) step inside a pipeline run"},
          ("02", "03", "06"))
    runs = sources.catalog()
    if not runs:
        sources.no_runs_message()
        return
    grouped = sources.groups(runs)
    g, r = st.columns([1, 3])
    restore("loss_group", one_of(["(chosen here)"] + list(grouped)))
    restore("loss_group_shown", lambda v: True)  # which group's runs were put in the selection last
    restore("loss_runs", some_of(runs))
    group = g.selectbox("runs of", ["(chosen here)"] + list(grouped), key="loss_group",
                        help="a group is a folder of the runs directory: growth (paper Table 1), routing, ...")
    if group in grouped and st.session_state.get("loss_group_shown") != group:
        st.session_state["loss_runs"] = grouped[group]  # a new group replaces the selection once, all of it
    st.session_state["loss_group_shown"] = group
    with r:
        chosen = sources.select_runs("runs", runs, sources.default_runs(runs, PREFER), key="loss_runs")
    if not chosen:
        st.info("Choose one or more runs.")
        return
    c1, c2, c3 = st.columns(3)
    # A pipeline is compared with its baseline at equal training FLOPs (the paper's claim): FLOPs by default.
    pipeline = any(stage_boundaries(run) for run in chosen)
    axes = ["step", "tokens", "flops", "time"]
    names = {"flops": "FLOPs (log)", "time": "wall-clock"}
    restore("loss_x", one_of(axes))
    x = c1.radio("x axis", axes, horizontal=True, index=2 if pipeline else 0,
                 format_func=lambda v: names.get(v, v), key="loss_x")
    metrics = available_metrics(chosen) or ["loss"]
    metrics = [m for m in metrics if m != "val_loss"] or metrics
    restore("loss_metric", one_of(metrics))
    metric = c2.selectbox("metric", metrics, format_func=lambda m: METRIC_LABELS.get(m, m), key="loss_metric")
    restore("loss_smoothing", number_in(0.0, 0.95))
    smoothing = c3.slider("smoothing", 0.0, 0.95, 0.0, 0.05, key="loss_smoothing")
    c4, c5, c6 = st.columns(3)
    restore("loss_mark", flag)
    mark = c4.checkbox("mark stage transitions", value=True, key="loss_mark")
    l1, l2 = c5.columns(2)
    restore(f"log_x_{x}", flag)
    log_x = l1.checkbox("log x", value=x == "flops", key=f"log_x_{x}")  # FLOPs span decades: log by default
    restore("loss_log_y", flag)
    log_y = l2.checkbox("log y", value=False, key="loss_log_y")
    live = c6.checkbox(f"follow live runs (every {REFRESH_S} s)", value=False)
    args = ([r.name for r in chosen], x, metric, smoothing, mark, log_x, log_y)
    if live:
        st.fragment(run_every=REFRESH_S)(charts)(*args)
    else:
        charts(*args)


if __name__ == "__main__":
    render()
