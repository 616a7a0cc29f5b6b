"""Page: grow a model live and see what each Scale-Up method keeps (AquilaMoE 2.2.1, Table 1).

The methods are those of `lab.growth` (FPI, AKI, AKI-Pro, and MSG, masked structural growth, whose masks a
slider sets by hand: the page grows and compares, it does not train). The source is by default a shipped
pretrained source (data/sources: a model that has learned something, so what growth keeps and loses shows in
its loss), or a small custom decoder built in memory (random, or trained for a few seconds). The target
defaults to the lab's experiments' growth (twice the width, half again the depth); the result shows the
largest logit gap against the source, the validation loss before and after, both parameter counts, and
which choices coincide. Every size is bounded (`explorer.LIMITS`), so a request takes seconds and little
memory.
"""

from __future__ import annotations

import streamlit as st

from lab.dashboard import cache, explorer
from lab.dashboard.page_intro import intro
from lab.dashboard.view_state import flag, number_in, one_of, restore
from lab.errors import LabError
from lab.growth import DEPTH_KINDS, METHODS, inserted_copies, layer_order
from lab.plots.growth import init_loss_figure, layer_order_figure, parameter_figure


def _int(col, label: str, name: str, value: int, key: str, upper: int | None = None, step: int = 1,
         help: str | None = None) -> int:
    low, high = explorer.LIMITS[name]
    restore(key, number_in(low, min(high, upper or high), int))
    return int(col.number_input(label, min_value=low, max_value=min(high, upper or high), value=value, step=step,
                                key=key, help=help))


CUSTOM = "custom (built here)"


def shipped_names() -> list[str]:
    from lab.sources import SOURCE_NAMES, SOURCES_DIR

    return [name for name in SOURCE_NAMES if (SOURCES_DIR / name / "config.json").is_file()]


def source_inputs():
    """(the source model, a key naming it for the target's widgets)."""
    st.subheader("Source")
    restore("src_kind", one_of([*shipped_names(), CUSTOM]))
    choice = st.radio("source", [*shipped_names(), CUSTOM], horizontal=True, key="src_kind",
                      help="a pretrained source of data/sources (python -m lab sources list), or a small model "
                           "built and briefly trained here")
    if choice != CUSTOM:
        model = cache.shipped_source(choice)
        cfg = model.config
        st.caption(f"{choice}: {cfg.n_layers} layers, hidden size {cfg.dim}, {cfg.n_heads} heads in "
                   f"{cfg.n_kv_heads} key-value groups, intermediate size {cfg.ffn_dim}; pretrained on the "
                   "lab's corpus (its model card: data/sources/" + choice + "/README.md).")
        return model, choice
    c = st.columns(6)
    dim = _int(c[0], "dim", "dim", 64, "src_dim", explorer.SOURCE_MAX["dim"], step=16)
    layers = _int(c[1], "layers", "n_layers", 2, "src_layers", explorer.SOURCE_MAX["n_layers"])
    heads = _int(c[2], "heads", "n_heads", 4, "src_heads", explorer.SOURCE_MAX["n_heads"])
    kv = _int(c[3], "kv heads", "n_heads", heads, "src_kv", explorer.SOURCE_MAX["n_heads"])
    ffn = _int(c[4], "ffn_dim", "ffn_dim", 176, "src_ffn", explorer.SOURCE_MAX["ffn_dim"], step=16)
    steps = _int(c[5], "train steps", "train_steps", 20, "src_steps",
                 help="AdamW steps on the shipped corpus before growing (0: a random model)")
    cfg = explorer.source_config(dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv, ffn_dim=ffn)
    return cache.source_model(cfg, steps, 0), f"custom-{dim}-{layers}-{heads}-{kv}-{ffn}"


def target_inputs(cfg, source_key: str):
    st.subheader("Target and method")
    # Widget keys carry the source: another source brings its own defaults.
    key = lambda name: f"{name}_{source_key}"  # noqa: E731
    wanted = explorer.default_target(cfg)
    c = st.columns(6)
    restore(key("method"), one_of(METHODS))
    restore(key("depth"), one_of(DEPTH_KINDS))
    method = c[0].selectbox("method", METHODS, index=2 if cfg.n_kv_heads != cfg.n_heads else 0, key=key("method"))
    depth = c[1].selectbox("depth", DEPTH_KINDS, index=DEPTH_KINDS.index("interpolate" if method == "aki-pro" else "stack"),
                           key=key("depth"))
    dim = _int(c[2], "dim", "dim", wanted["dim"], key("tgt_dim"), step=16)
    layers = _int(c[3], "layers", "n_layers", wanted["n_layers"], key("tgt_layers"),
                  help="more layers than the source: the depth rule decides what fills them")
    heads = _int(c[4], "heads", "n_heads", wanted["n_heads"], key("tgt_heads"))
    ffn = _int(c[5], "ffn_dim", "ffn_dim", wanted["ffn_dim"], key("tgt_ffn"), step=16)
    restore(key("noise"), number_in(0.0, 0.1))
    noise = st.slider("symmetric noise (relative std)", 0.0, 0.1, 0.0, 0.01, key=key("noise"))
    return dict(method=method, depth=depth, dim=dim, n_layers=layers, n_heads=heads, ffn_dim=ffn, noise=noise)


def msg_mask_input(source_key: str) -> float:
    """MSG's mask value, set by hand: the explorer grows and compares, it does not train."""
    key = f"msg_mask_{source_key}"
    restore(key, number_in(0.0, 1.0))
    return st.slider("MSG mask c of the new units (set by hand, no training)", 0.0, 1.0, 0.0, 0.05, key=key,
                     help="0: as grown, the source's function; 1: the untrained new units fully on. In training the "
                          "mask ramps from 0 to 1 over the plan's ramp steps while the new units learn")


def msg_caption(result: explorer.GrowthResult) -> str:
    ramp_steps = result.plan.ramp_steps
    where = ("at c = 0, as grown: the source's function whatever the new weights are" if result.mask == 0 else
             f"at c = {result.mask:g}, set by hand: the random new units {'fully' if result.mask == 1 else 'partly'} "
             "on, before they have learnt anything")
    return (f"Masked structural growth (Yao et al. 2024, arXiv 2305.02869): the new units, heads, hidden dimensions "
            f"and layers hold fresh random weights, and what they add is scaled by a mask c, here {where}. This page "
            f"does not train. In training (`python -m lab grow --method msg`, then `python -m lab train`) the mask "
            f"ramps from 0 to 1 over the plan's {ramp_steps} steps while the new units learn, and then folds into "
            "the weights.")


def show_result(result: explorer.GrowthResult) -> None:
    c = st.columns(4)
    c[0].metric("max |logit gap|", f"{result.max_logit_gap:.2e}")
    c[1].metric("loss: source", f"{result.source_loss:.4f}")
    change = result.grown_loss - result.source_loss
    c[2].metric("loss at init: grown", f"{result.grown_loss:.4f}", f"{change:+.4f}" if abs(change) >= 5e-5 else None,
                delta_color="inverse")
    c[3].metric("parameters", f"{result.grown_params:,}", f"×{result.grown_params / result.source_params:.2f}",
                delta_color="off")
    exact = result.plan.is_exact
    st.caption(f"{'Function-preserving' if exact else 'Not function-preserving'} by construction "
               f"(`GrowthPlan.is_exact` = {exact}{', at mask 0' if result.plan.method == 'msg' else ''}); grown and "
               f"compared in {result.seconds:.2f} s on {explorer.N_PER_DOMAIN} validation windows of "
               f"{explorer.SEQ_LEN} tokens per domain.")
    if result.plan.method == "msg":
        st.info(msg_caption(result))
    for note in explorer.choice_notes(result.plan):
        st.info(note)
    s, t = result.plan.source, result.plan.target
    orders = {kind: layer_order(s.n_layers, t.n_layers, kind) for kind in DEPTH_KINDS}
    inserted = {"identity": inserted_copies(orders["identity"])}
    c1, c2 = st.columns(2)
    c1.plotly_chart(layer_order_figure(orders, inserted=inserted,
                                       title=f"source layer of each new layer (chosen: {result.plan.depth})"),
                    width="stretch", key="order")
    c2.plotly_chart(parameter_figure({"source": result.source_params, "grown": result.grown_params},
                                     title="parameters"), width="stretch", key="params")


def render() -> None:
    st.title("Growth explorer")
    intro("Grow a pretrained source (or a small model built here) with each method and see, right after "
          "growth and before any training, how much of the source's function survives: the loss on the "
          "validation windows, the largest logit gap, and which source layer each new layer copies.",
          {"loss right after growth": "validation cross-entropy of the grown model before any step (nats per "
                                      "token); the source's when the method is function-preserving",
           "max logit gap": "largest absolute difference between the grown and the source model's logits on the "
                            "same tokens (0 for FPI with integer ratios, and for MSG at mask 0)",
           "layer order": "for each new layer, the source layer it starts from (stacking, interpolation, identity)"},
          ("01", "02", "03"))
    try:
        source, source_key = source_inputs()
        cfg = source.config
        target = target_inputs(cfg, source_key)
        mask = msg_mask_input(source_key) if target["method"] == "msg" else 0.0
        plan = explorer.plan_for(cfg, **target)
    except LabError as e:
        st.error(str(e))
        return
    tokens = cache.window_batch()
    with st.spinner("growing..."):
        show_result(explorer.grow_and_compare(source, plan, tokens, mask=mask))
    restore("all", flag)
    if st.checkbox("compare every method on this source and target (paper Table 1 at toy scale)", key="all"):
        sizes = {k: target[k] for k in ("dim", "n_layers", "n_heads", "ffn_dim")}
        results = explorer.compare_methods(source, tokens, **sizes)
        losses = {k: r.grown_loss for k, r in results.items() if not isinstance(r, str)}
        source_loss = next(iter(r.source_loss for r in results.values() if not isinstance(r, str)), None)
        if source_loss is not None:
            st.plotly_chart(init_loss_figure(losses, source_loss=source_loss, relative=True,
                                             title="validation loss at initialisation, above the source's"),
                            width="stretch", key="all_methods")
        for k, r in results.items():
            if isinstance(r, str):
                st.caption(f"{k}: not applicable ({r})")


if __name__ == "__main__":
    render()
