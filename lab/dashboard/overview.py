"""Page: what the lab does, and the runs the dashboard found (one row each)."""

from __future__ import annotations

import streamlit as st

from lab.dashboard import sources
from lab.dashboard.view_state import one_of, restore, some_of
from lab.runs import Run


def summary(run: Run) -> dict:
    """One table row: stages, last step/tokens, last training and validation loss, problems met, and the
    run's own description (meta.json `description`, written by the reference runs)."""
    train, evals = run.events("train"), run.events("eval")
    stages = list(dict.fromkeys(str(r.get("stage")) for r in run.metrics.records if r.get("stage")))
    last = run.metrics.records[-1] if run.metrics.records else {}
    return {"run": run.name, "stages": " → ".join(stages), "step": last.get("step"), "tokens": last.get("tokens"),
            "loss": train[-1].get("loss") if train else None,
            "val loss": evals[-1].get("val_loss_mean") if evals else None,
            "MoE": any("tokens_per_expert" in r for r in train), "problems": len(run.metrics.problems),
            "description": str(run.meta.get("description", ""))}


KINDS = ("every run", "MoE only", "dense only")


def filtered(rows: list[dict]) -> list[dict]:
    """The rows the filters above the table keep: by group (the runs directory's folders), by stage, MoE or dense."""
    c1, c2, c3 = st.columns(3)
    groups = sorted({r["group"] for r in rows})
    stages = sorted({s for r in rows for s in r["stages"].split(" → ") if s})
    restore("overview_groups", some_of(groups))
    chosen_groups = c1.multiselect("groups", groups, key="overview_groups", placeholder="every group")
    restore("overview_stages", some_of(stages))
    chosen_stages = c2.multiselect("with a stage", stages, key="overview_stages", placeholder="any stage")
    restore("overview_kind", one_of(KINDS))
    kind = c3.radio("kind", KINDS, horizontal=True, key="overview_kind")
    keep = [r for r in rows
            if (not chosen_groups or r["group"] in chosen_groups)
            and (not chosen_stages or set(chosen_stages) & set(r["stages"].split(" → ")))
            and (kind == KINDS[0] or r["MoE"] == (kind == KINDS[1]))]
    if len(keep) < len(rows):
        st.caption(f"{len(keep)} of {len(rows)} runs shown")
    return keep


def render() -> None:
    st.title("EfficientScale Lab")
    st.markdown(
        "Grow a small dense decoder into a bigger one (**Scale-Up**: FPI, AKI, AKI-Pro; depth by stacking, "
        "interpolation or identity blocks), turn it into a Mixture of Experts (**Scale-Out**: sparse "
        "upcycling, top-2 of 8), and keep training after each step, as AquilaMoE does (arXiv 2408.06567).\n\n"
        "- **Loss curves**: runs overlaid by step, tokens or FLOPs, stages marked, validation loss per domain.\n"
        "- **Expert load**: tokens per expert per layer over training; balance loss, z-loss, router entropy.\n"
        "- **Compute savings**: the paper's Table 6 (4.12× time, 3.35× compute), editable, and from a run.\n"
        "- **Run details**: the text each evaluation generated, a pipeline's transitions, a run's configuration.\n"
        "- **Growth explorer**: grow a small model live and see what each method preserves.\n"
        "- **Live run**: train a tiny recipe or the tiny pipeline in the background and watch its metrics.\n\n"
        "Each page says what it shows and which notebook explains it; a run's configuration is on **Run details**.")
    runs = sources.catalog()
    if not runs:
        sources.no_runs_message()
        return
    st.subheader(f"Runs in `{sources.runs_root()}`")
    rows = filtered([summary(r) | {"group": sources.group_of(label)} for label, r in runs.items()])
    # Descriptions are whole sentences: the column wraps them rather than cutting them off.
    st.dataframe(rows, hide_index=True, width="stretch", height=min(38 + 35 * len(rows), 600),
                 column_config={"description": st.column_config.TextColumn(width="large")})
    sources.show_problems(list(runs.values()), limit=3)


if __name__ == "__main__":
    render()
