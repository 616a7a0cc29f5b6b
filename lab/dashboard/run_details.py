"""Page: one run in detail, or two side by side: the text each evaluation generated, each growth or
upcycling transition of a pipeline, and the run's configuration.

The samples are the `sample` records training writes at every evaluation (greedy continuations of one
prompt per domain); the transitions are a pipeline's `transition` records, with the parameter counts of
the stage models its meta.json records; the configuration is meta.json's recipe and model.
"""

from __future__ import annotations

import streamlit as st

from lab.dashboard import sources
from lab.dashboard.page_intro import intro
from lab.dashboard.view_state import one_of, restore
from lab.runs import Run

NONE = "(none)"


def sample_steps(run: Run) -> list[int]:
    return [int(r["step"]) for r in run.events("sample") if isinstance(r.get("samples"), dict)]


def samples_at(run: Run, step: int) -> tuple[dict, dict]:
    """(prompts, samples) by domain of the sample record nearest `step` at or before it (the first when
    the run has none before)."""
    records = [r for r in run.events("sample") if isinstance(r.get("samples"), dict)]
    before = [r for r in records if r["step"] <= step]
    record = before[-1] if before else records[0]
    return record.get("prompts") or {}, record["samples"]


def transitions(run: Run) -> list[dict]:
    """One row per growth or upcycling step of a pipeline run: what changed, the parameter counts of the
    models before and after (from meta.json's stages), and the validation loss just before and right after."""
    from lab.config import ModelConfig
    from lab.flops import active_parameters, total_parameters

    models = {}
    for stage in run.meta.get("stages") or []:
        try:
            models[stage["name"]] = ModelConfig.from_dict(stage["model"])
        except (KeyError, TypeError, ValueError):
            continue
    rows = []
    for r in run.events("transition"):
        before, after = models.get(r.get("from_stage")), models.get(r.get("stage_name"))
        rows.append({
            "step": r.get("step"), "kind": r.get("kind"), "change": r.get("change"),
            "from → to": f"{r.get('from_stage')} → {r.get('stage_name')}",
            "parameters before": total_parameters(before) if before else None,
            "parameters after": total_parameters(after) if after else None,
            "active after": active_parameters(after) if after else None,
            "loss just before": r.get("val_loss_mean_before"), "loss right after": r.get("val_loss_mean"),
        })
    return rows


def show_samples(shown: list[Run]) -> None:
    with_samples = [r for r in shown if sample_steps(r)]
    if not with_samples:
        st.caption("No `sample` records in these runs (training writes them at each evaluation when "
                   "train.sample_tokens > 0).")
        return
    steps = sorted({s for r in with_samples for s in sample_steps(r)})
    restore("details_step", one_of(steps))
    step = st.select_slider("evaluation step", steps, value=steps[-1], key="details_step") if len(steps) > 1 \
        else steps[0]
    domains = list(dict.fromkeys(d for r in with_samples for d in samples_at(r, step)[1]))
    for domain in domains:
        st.markdown(f"**{domain}**")
        cols = st.columns(len(with_samples))
        for col, run in zip(cols, with_samples):
            prompts, samples = samples_at(run, step)
            with col:
                st.caption(f"{run.name}, step {step}: the prompt, then what the model wrote")
                st.code(f"{prompts.get(domain, '')}⟶{samples.get(domain, '')}", language=None, wrap_lines=True)


def show_transitions(shown: list[Run]) -> None:
    any_shown = False
    for run in shown:
        rows = transitions(run)
        if rows:
            any_shown = True
            st.markdown(f"**{run.name}**")
            st.dataframe(rows, hide_index=True, width="stretch")
    if not any_shown:
        st.caption("No growth or upcycling transition in these runs (a pipeline run records one per stage "
                   "after the first).")


def show_config(shown: list[Run]) -> None:
    cols = st.columns(len(shown))
    for col, run in zip(cols, shown):
        with col:
            st.markdown(f"**{run.name}**")
            meta = run.meta or {}
            if not meta:
                st.caption("no meta.json (an uploaded metrics file)")
                continue
            st.json({k: meta[k] for k in ("recipe", "model", "stages", "environment") if k in meta}, expanded=1)


def render() -> None:
    st.title("Run details")
    intro("What a run wrote besides its curves: the text its model generated at each evaluation, the growth and "
          "upcycling transitions of a pipeline with the loss just before and right after each, and the run's "
          "configuration. Choose a second run to see it side by side.",
          {"sample": "the greedy continuation of one prompt per domain, generated at an evaluation step",
           "loss just before / right after": "mean validation loss (nats per token) of the last model of the "
                                             "previous stage, and of the transformed one before any step",
           "parameters": "every weight (total) and those one token uses (active: the top-k routed experts)"},
          ("02", "04", "06"))
    runs = sources.catalog()
    if not runs:
        sources.no_runs_message()
        return
    labels = list(runs)
    c1, c2 = st.columns(2)
    restore("details_a", one_of(labels))
    a = c1.selectbox("run", labels, key="details_a")
    restore("details_b", one_of([NONE] + labels))
    b = c2.selectbox("side by side with", [NONE] + labels, key="details_b")
    shown = [runs[a]] + ([runs[b]] if b in runs and b != a else [])
    samples, transitions_tab, config = st.tabs(["Samples", "Transitions", "Configuration"])
    with samples:
        show_samples(shown)
    with transitions_tab:
        show_transitions(shown)
    with config:
        show_config(shown)


if __name__ == "__main__":
    render()
