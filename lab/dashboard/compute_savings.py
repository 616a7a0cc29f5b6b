"""Page: the compute savings of EfficientScale (AquilaMoE Table 6), editable, and from a run's records.

The factors are `lab.flops.savings`: time = scratch days / the phases' days (4.12 for the paper's
figures), compute = the same weighted by each cluster's rate in TFLOP/s (3.35). Edit a cell and both update.
"""

from __future__ import annotations

import math
from dataclasses import replace

import streamlit as st

from lab.dashboard import measured, sources, view_state
from lab.dashboard.page_intro import intro
from lab.flops import Phase, savings, scratch_phase
from lab.paper import TABLE6, TABLE6_SCRATCH
from lab.plots.savings import savings_figure

TABLE_KEY = "table6"
VERSION_KEY = "table6_version"
# The cells edited away from the paper's figures, {phase: {column: value}}: the part of the table's view
# that is remembered across pages and written to the URL (the editor's own state is per version).
EDITS_KEY = "table6_edits"
# column: (Phase field, min, max); the bounds keep every figure positive and finite.
COLUMNS = {"devices": ("devices", 1, 1_000_000), "TFLOP/s per device": ("tflops_per_device", 1e-9, 1e4),
           "model (B)": ("params_b", 1e-9, 1e5), "tokens (B)": ("tokens_b", 1e-12, 1e6),
           "tokens / day (B)": ("tokens_per_day_b", 1e-12, 1e6)}


def phase_rows(phases: list[Phase]) -> list[dict]:
    return [{"phase": p.name, **{col: getattr(p, f) for col, (f, _, _) in COLUMNS.items()}} for p in phases]


def rows_to_phases(rows: list[dict]) -> list[Phase] | str:
    """Phases from edited rows, or why they cannot be used (an empty or out-of-range cell)."""
    phases = []
    for row in rows:
        values = {}
        for col, (field, low, high) in COLUMNS.items():
            v = row.get(col)
            if v is None or not isinstance(v, (int, float)) or math.isnan(v) or not low <= v <= high:
                return f"{row.get('phase')}: {col} must be a number in [{low:g}, {high:g}]"
            values[field] = int(v) if field == "devices" else float(v)
        phases.append(Phase(str(row["phase"]), **values))
    return phases


def edits_between(paper: list[dict], rows: list[dict]) -> dict[str, dict[str, float]]:
    """The cells of `rows` that differ from the paper's, by phase and column."""
    edits: dict[str, dict[str, float]] = {}
    for before, after in zip(paper, rows):
        changed = {col: after[col] for col in COLUMNS if after.get(col) != before[col]}
        if changed:
            edits[str(before["phase"])] = changed
    return edits


def with_edits(paper: list[dict], edits: dict[str, dict[str, float]]) -> list[dict]:
    return [{**row, **edits.get(str(row["phase"]), {})} for row in paper]


def valid_edits(phases: list[str]):
    """A check for `view_state.restore`: edits of known phases and columns, each a number in its column's range."""
    def allowed(value) -> bool:
        return isinstance(value, dict) and all(
            phase in phases and isinstance(cells, dict) and all(
                col in COLUMNS and view_state.number_in(*COLUMNS[col][1:], int if col == "devices" else float)(v)
                for col, v in cells.items())
            for phase, cells in value.items())
    return allowed


def show_factors(phases: list[Phase], scratch: Phase, key: str) -> None:
    time_factor, compute_factor = savings(phases, scratch)
    c1, c2 = st.columns(2)
    c1.metric("time savings", f"{time_factor:.2f}×", help="scratch days / the phases' days")
    c2.metric("compute savings", f"{compute_factor:.2f}×", help="scratch PFLOP/s-days / the phases' PFLOP/s-days (days x devices x TFLOP/s per device)")
    st.plotly_chart(savings_figure(phases, scratch), width="stretch", key=key)


def paper_table() -> None:
    st.subheader("The paper's figures (Table 6)")
    # The editor keeps its edits under its key; a reset gives it a new key, so no old edit comes back.
    paper = phase_rows([*TABLE6, TABLE6_SCRATCH])
    version = st.session_state.setdefault(VERSION_KEY, 0)
    view_state.restore(EDITS_KEY, valid_edits([row["phase"] for row in paper]))
    if st.button("reset to the paper's figures"):
        st.session_state.pop(f"{TABLE_KEY}-{version}", None)
        version = st.session_state[VERSION_KEY] = version + 1
        st.session_state[EDITS_KEY] = {}
    config = {col: st.column_config.NumberColumn(col, min_value=low, max_value=high, required=True, format="%.4g")
              for col, (_, low, high) in COLUMNS.items()}
    config["phase"] = st.column_config.TextColumn("phase", disabled=True)
    # The editor starts from the remembered edits; a keyed editor of fixed rows keeps its own edits when only
    # the values it is given change, and applies them on top (the same cells, the same values).
    edited = st.data_editor(with_edits(paper, st.session_state.get(EDITS_KEY, {})), key=f"{TABLE_KEY}-{version}",
                            num_rows="fixed", hide_index=True, column_config=config, width="stretch")
    st.session_state[EDITS_KEY] = edits_between(paper, edited)
    phases = rows_to_phases(edited)
    if isinstance(phases, str):
        st.error(phases)
        return
    show_factors(phases[:-1], phases[-1], key="paper")


def from_run() -> None:
    st.subheader("From a run's measured figures")
    runs = {label: r for label, r in sources.catalog().items() if measured.phases_from_run(r)}
    if not runs:
        st.caption("No run with train records holding tokens, FLOPs and tokens_per_s.")
        return
    labels = list(runs)
    default = next((i for i, l in enumerate(labels) if len(measured.phases_from_run(runs[l])) > 1), 0)
    c1, c2 = st.columns(2)
    view_state.restore("savings_run", view_state.one_of(labels))
    label = c1.selectbox("pipeline run", labels, index=default, key="savings_run")
    phases = measured.phases_from_run(runs[label])
    baseline_labels = [l for l in labels if l != label]
    base_options = ["the last stage's model and throughput on all tokens"] + baseline_labels
    view_state.restore("savings_baseline", view_state.one_of(base_options))
    base = c2.selectbox("from scratch", base_options,
                        index=next((i + 1 for i, l in enumerate(baseline_labels) if "baseline" in l), 0),
                        key="savings_baseline")
    scratch = scratch_phase(phases)
    if base in runs:
        measured_scratch = measured.scratch_from_run(runs[base])
        if measured_scratch is not None:  # the baseline's throughput, on the pipeline's token budget
            scratch = replace(measured_scratch, tokens_b=scratch.tokens_b)
    st.dataframe(phase_rows([*phases, scratch]), hide_index=True, width="stretch",
                 column_config={col: st.column_config.NumberColumn(col, format="%.4g") for col in COLUMNS})
    st.caption("Measured: tokens per stage, median tokens/s, achieved TFLOP/s per device (FLOPs per token × tokens/s),"
               " model size as FLOPs per token / 6.")
    show_factors(phases, scratch, key="measured")


def render() -> None:
    st.title("Compute savings")
    intro("The paper's Table 6: the time and compute the three-stage pipeline saves against training the "
          "final MoE from scratch on all the tokens, editable, then the same accounting for a pipeline run "
          "of your own.",
          {"tokens per day": "a phase's throughput in billions of tokens per day (the paper's column; for a "
                             "run, its median tokens/s x 86,400)",
           "days": "a phase's tokens / its tokens per day",
           "time savings": "the from-scratch run's days / the stages' days together",
           "compute savings": "the same with each phase's days weighted by its cluster's rate (devices x "
                              "TFLOP/s per device): PFLOP/s-days from scratch / the stages' together",
           "TFLOP/s per device": "10^12 floating-point operations per second per device (the paper's 989.5 "
                                 "for the preparation cluster, 240 for the others)"},
          ("05", "06"))
    paper_table()
    from_run()


if __name__ == "__main__":
    render()
