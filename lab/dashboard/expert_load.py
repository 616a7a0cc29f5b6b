"""Page: how routers spread tokens over experts, over training and per domain; two runs side by side.

Heatmaps come from train records' `tokens_per_expert` (one list of counts per MoE layer). Per-domain
load comes from eval records' `tokens_per_expert_by_domain` when a run wrote them, else it is measured
live: on the run's `final/` checkpoint when it has one, or on a small upcycled demo model, trained here for
a few steps with the load balancing the page's control chooses: the load-balancing loss, aux-loss-free
routing biases (DeepSeek-V3, arXiv 2412.19437; Wang et al. 2024, arXiv 2408.15664), or none.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from lab.config import BALANCES
from lab.dashboard import cache, explorer, sources
from lab.dashboard.page_intro import intro
from lab.dashboard.view_state import number_in, one_of, restore
from lab.plots.experts import (DOMAIN_LOAD_FIELD, domain_load_figure, domain_load_from_run, domain_load_steps,
                               expert_load_heatmap, n_moe_layers, router_metrics_figure)
from lab.runs import MetricsLog, Run

MAX_CHECKPOINT_PARAMS = 50_000_000  # measured live only below this size (seconds, bounded memory)
DEMO_STEPS = 30  # the demo MoE's default training: about a second on one thread, enough for the biases to move
DEMO_MAX_STEPS = explorer.LIMITS["train_steps"][1]


def run_panel(run: Run, layer: int | None, x: str, key: str) -> None:
    st.plotly_chart(expert_load_heatmap(run, layer=layer, x=x, title=run.name), width="stretch", key=key)


@st.cache_resource(max_entries=2, show_spinner="loading the checkpoint...")
def _checkpoint_model(path: str, stamp: float):
    import torch

    from lab.checkpoint import load_pretrained

    return load_pretrained(path, dtype=torch.float32).eval()


def checkpoint_load(run: Run) -> dict | None:
    """Per-domain load measured on the run's final/ checkpoint, when it is an MoE small enough."""
    if run.name.startswith(sources.UPLOAD_PREFIX):
        return None  # an upload is a metrics file only: its name is no path on this machine
    final = Path(run.path) / "final"
    if not (final / "config.json").is_file():
        return None
    from lab.checkpoint import read_config
    from lab.flops import total_parameters

    cfg, _ = read_config(final)
    if not cfg.is_moe or total_parameters(cfg) > MAX_CHECKPOINT_PARAMS:
        return None
    model = _checkpoint_model(str(final), (final / "config.json").stat().st_mtime)
    return explorer.domain_expert_load(model, cache.windows())


def per_domain(run: Run | None) -> None:
    """Per-domain load of `run` (recorded, or measured on its checkpoint), else of a freshly upcycled model."""
    st.subheader("Load per domain")
    if run is None:
        demo("No MoE run to measure; below, a small dense model trained for a few seconds, upcycled to 8 "
             "experts (top-2), trained a few steps more under the chosen load balancing, measured on each domain.")
        return
    steps = domain_load_steps(run)
    if len(steps) > 1:
        restore("domain_step", one_of(steps))
    chosen = st.select_slider("eval step", steps, value=steps[-1], key="domain_step") if len(steps) > 1 else None
    found = domain_load_from_run(run, chosen)
    if found is not None:
        step, loads = found
        st.plotly_chart(domain_load_figure(loads, title=f"{run.name}, eval at step {step}"), width="stretch",
                        key="domain_run")
        return
    loads = checkpoint_load(run)
    if loads is not None:
        st.plotly_chart(domain_load_figure(loads, title=f"{run.name}/final, measured on the validation windows"),
                        width="stretch", key="domain_ckpt")
        return
    demo(f"{run.name} records no `{DOMAIN_LOAD_FIELD}` and has no final/ checkpoint here; below, a small "
         "dense model trained for a few seconds, upcycled to 8 experts (top-2), trained a few steps more under the "
         "chosen load balancing, measured on each domain.")


@st.cache_resource(max_entries=6, show_spinner="training the upcycled demo model...")
def _trained_demo(routing: str, seed: int, balance: str, steps: int):
    """(the demo MoE after `steps` training steps under `balance`, its train records); read-only once made."""
    cfg = explorer.source_config(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176)
    source = cache.source_model(cfg, 20, seed)
    model = explorer.upcycled_demo_model(source, routing=routing, seed=seed, balance=balance)
    records = explorer.train_demo_moe(model, steps=steps, train_tokens=cache.corpus_tokens("train"), seed=seed)
    return model, records


def demo_summary(records: list[dict]) -> dict[str, float | None]:
    """Load CV over the last quarter of the demo's steps (counts summed: less batch noise), the LM loss there,
    and the largest expert bias at the end (None without aux-free balancing)."""
    from lab.teach.experts import load_cv

    last = records[-max(1, len(records) // 4):]
    n_layers, n_experts = len(last[0]["tokens_per_expert"]), len(last[0]["tokens_per_expert"][0])
    summed = [[sum(r["tokens_per_expert"][layer][e] for r in last) for e in range(n_experts)]
              for layer in range(n_layers)]
    biases = last[-1].get("expert_bias")
    return {"load_cv": load_cv(summed), "lm_loss": sum(r["lm_loss"] for r in last) / len(last),
            "max_bias": max(abs(b) for layer in biases for b in layer) if biases else None}


def demo(caption: str) -> None:
    """Per-domain load of a small upcycled MoE, trained a few steps under the chosen load balancing (bounded:
    cached, seconds on a CPU)."""
    st.caption(caption)
    c1, c2, c3, c4 = st.columns(4)
    routings = ["topk_softmax", "softmax_topk"]
    restore("demo_routing", one_of(routings))
    routing = c1.selectbox("routing", routings, key="demo_routing")
    restore("demo_seed", number_in(0, 99, int))
    seed = int(c2.number_input("router seed", 0, 99, 0, key="demo_seed"))
    restore("demo_balance", one_of(BALANCES))
    balance = c3.selectbox("balance", BALANCES, key="demo_balance",
                           help="aux_loss: load-balancing loss x 0.001 in the training loss; aux_free: a routing bias "
                                "per expert, moved by 0.001 against its load after every step (DeepSeek-V3); none")
    restore("demo_steps", number_in(0, DEMO_MAX_STEPS, int))
    steps = int(c4.number_input("training steps", 0, DEMO_MAX_STEPS, DEMO_STEPS, key="demo_steps",
                                help=f"AdamW steps of the upcycled model on {explorer.BATCH} x {explorer.SEQ_LEN} "
                                     "tokens each (0: as upcycled)"))
    model, records = _trained_demo(routing, seed, balance, steps)
    loads = explorer.domain_expert_load(model, cache.windows())
    if not records:
        st.caption("As upcycled, before any step: the balancing acts only during training, so all three choices "
                   "give this same load.")
        title = "freshly upcycled model: share of tokens per expert"
    else:
        summary = demo_summary(records)
        m = st.columns(3)
        m[0].metric("load CV, last quarter of the steps", f"{summary['load_cv']:.3f}",
                    help="std / mean of the tokens each expert got, summed over the last quarter of the steps, "
                         "averaged over layers: 0 at perfect balance")
        m[1].metric("LM loss, last quarter", f"{summary['lm_loss']:.3f}")
        m[2].metric("largest |expert bias|", "—" if summary["max_bias"] is None else f"{summary['max_bias']:.3f}")
        st.plotly_chart(expert_load_heatmap(Run(f"demo ({balance})", Path("demo"), {}, MetricsLog(records=records)),
                                            title=f"demo training, balance {balance}: tokens per expert per step"),
                        width="stretch", key="demo_heat")
        st.caption(f"One seed, {steps} steps of {explorer.BATCH} x {explorer.SEQ_LEN} tokens: a demonstration of "
                   "the mechanism, not a comparison of the methods.")
        title = f"after {steps} steps with balance {balance}: share of tokens per expert"
    st.plotly_chart(domain_load_figure(loads, title=title), width="stretch", key="domain_demo")


def render() -> None:
    st.title("Expert load")
    intro("How an MoE's router shares the tokens among its experts during training, layer by layer, and the "
          "auxiliary losses that steer it. A balanced router sends each expert the same share; a collapsed "
          "one sends most tokens to a few experts.",
          {"tokens per expert": "share of the top-k assignments that went to each expert, per MoE layer "
                                "(1/E each at perfect balance)",
           "load-balancing loss": "E x sum over experts of (fraction of assignments) x (mean router probability): "
                                  "1 at perfect balance, per layer; summed or averaged over layers as the run's "
                                  "router_loss_aggregation says",
           "z-loss": "mean over tokens of (logsumexp of the router logits) squared (ST-MoE); keeps the logits small",
           "router entropy": "mean entropy of the router's distribution per token, in nats (ln E when uniform)"},
          ("04",))
    runs = {label: r for label, r in sources.catalog().items() if n_moe_layers(r) > 0}
    if not runs:
        if sources.catalog():
            st.info("None of the runs is a Mixture of Experts (no `tokens_per_expert` in its train records).")
        else:
            sources.no_runs_message()
        per_domain(None)
        return
    labels = list(runs)
    c1, c2, c3 = st.columns(3)
    restore("experts_a", one_of(labels))
    a = c1.selectbox("run", labels, key="experts_a")
    restore("experts_b", one_of(["(none)"] + labels))
    b = c2.selectbox("compare with", ["(none)"] + labels, index=2 if len(labels) > 1 else 0, key="experts_b")
    restore("experts_x", one_of(["step", "tokens"]))
    x = c3.radio("x axis", ["step", "tokens"], horizontal=True, key="experts_x")
    layers = max(n_moe_layers(runs[a]), n_moe_layers(runs[b]) if b in runs else 0)
    restore("experts_layer", one_of(["all"] + list(range(layers))))
    choice = st.selectbox("MoE layer", ["all"] + list(range(layers)), key="experts_layer")
    layer = None if choice == "all" else int(choice)
    shown = [runs[a]] + ([runs[b]] if b in runs else [])
    cols = st.columns(len(shown))
    for i, (col, run) in enumerate(zip(cols, shown)):
        with col:
            run_panel(run, layer, x, key=f"heat{i}")
    st.subheader("Load balancing, z-loss, router entropy")
    st.plotly_chart(router_metrics_figure(shown, x=x), width="stretch", key="router")
    sources.show_problems(shown)
    per_domain(runs[a])


if __name__ == "__main__":
    render()
