# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Sparse upcycling and the router
#
# Scale-Out turns the dense model into a Mixture of Experts (AquilaMoE 2.3; Komatsuzaki et al. 2023):
# every MLP becomes $E = 8$ experts that are **exact copies** of it, and a new router picks the top
# $k = 2$ for each token. This notebook
#
# 1. checks that upcycling is exact at initialisation — and which variants are not;
# 2. looks at the router at init, then at the load per expert, per layer and per domain as training goes;
# 3. compares the routing choices with the reference runs: load-balancing loss and z-loss on and off,
#    top-k-then-softmax against softmax-then-top-k, fine-grained experts in virtual groups;
# 4. shows why Drop-Upcycling re-initialises part of each expert.

# %%
import math

import ipywidgets as widgets
import pandas as pd
import torch
from IPython.display import display

import lab
from lab.plots.curves import loss_figure
from lab.plots.experts import domain_load_figure, expert_load_heatmap, router_metrics_figure
from lab.plots.matrices import matrices_figure
from lab.teach.claims import claims_table, per_seed_table
from lab.teach.controls import live_figure
from lab.teach.display import setup_plotly
from lab.teach.experts import expert_load_by_domain
from lab.teach.fast import pick, setup_torch
from lab.teach.loop import as_run, train_steps, val_loss, validation_windows
from lab.teach.reference import missing_note, reference_group
from lab.teach.similarity import cosine_matrix, expert_units
from lab.upcycle import UpcyclePlan
from lab.derive import upcycle_model
from lab.verify import compare

setup_plotly()
setup_torch()  # seeded; one CPU thread, fastest for models this small (LAB_THREADS to change)

# %% [markdown]
# ## 1. Exact at initialisation
#
# A top-$k$ MoE layer computes $y = \sum_{e \in \text{top-}k} w_e\, \text{FFN}_e(x)$. With every expert a copy
# of the dense FFN, $y = \text{FFN}(x) \sum_e w_e$. **Top-k, then softmax** over the chosen logits
# (Mixtral) gives weights that sum to 1, whatever the router says: the MoE computes exactly the dense
# model. **Softmax, then top-k** (the Switch/GShard order) keeps the chosen probabilities, which sum
# to about $k/E$ at init; He et al. (2024) scale each expert's down projection by $E/k$ to compensate
# ("weight scaling"). Fine-grained experts (granularity $G$: each expert a $1/G$ slice of the MLP, the
# $E$ experts in $E/G$ *virtual groups* whose router rows are equal) are exact only if the slices of a
# group fire together and are scaled back by $G$.

# %%
SEQ = 64
dense_cfg = lab.ModelConfig(dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=256)
dense = lab.DecoderLM(dense_cfg)
_ = train_steps(dense, pick(300, 100), lr=3e-3, warmup=10, seq_len=SEQ, desc="dense")
tokens = torch.cat(list(validation_windows(SEQ, 2).values()))

variants = {
    "top-k → softmax (Mixtral)": UpcyclePlan(),
    "softmax → top-k, no scaling": UpcyclePlan(routing="softmax_topk", weight_scaling=False),
    "softmax → top-k, scaled by E/k": UpcyclePlan(routing="softmax_topk"),
    "16 experts, G=2, top-4, scaled": UpcyclePlan(n_experts=16, top_k=4, granularity=2),
    "16 experts, G=2, top-4, no scaling": UpcyclePlan(n_experts=16, top_k=4, granularity=2, weight_scaling=False),
    "Drop-Upcycling r=0.5": UpcyclePlan(drop_ratio=0.5),
}
rows, moes = [], {}
for name, plan in variants.items():
    moes[name] = moe = upcycle_model(dense, plan)
    gap, dense_loss, moe_loss = compare(dense, moe, tokens)
    rows.append({"upcycling": name, "parameters": moe.num_parameters(), "max |logit gap|": gap,
                 "loss, dense": dense_loss, "loss, MoE": moe_loss})
pd.DataFrame(rows).set_index("upcycling")

# %%
gap, _, _ = compare(dense, moes["top-k → softmax (Mixtral)"], tokens)
assert gap < 1e-4, gap   # sparse upcycling with top-k-then-softmax is the dense model

# %% [markdown]
# ## 2. The router at initialisation
#
# Router weights are drawn from $\mathcal N(0, 0.02^2)$: tiny logits, so the router's probabilities are
# almost uniform — its entropy is close to the maximum $\ln E$. Yet top-$k$ is a hard choice: the tokens'
# hidden states share a large common component, so the same few experts win most tokens even though no
# probability is far from $1/E$. Load per expert on each domain's validation text (share of the
# $T \cdot k$ assignments; white is the uniform $1/E$):

# %%
moe = upcycle_model(dense, UpcyclePlan())
out = moe(tokens, labels=tokens)
print(f"router entropy at init: {out.router_entropy.item():.3f} nats (max ln 8 = {math.log(8):.3f})")
domain_load_figure({d: load.tolist() for d, load in expert_load_by_domain(moe, SEQ).items()},
                   title="Expert load per layer and domain, at initialisation")

# %% [markdown]
# Move the choices: experts, experts per token, the routing order, the router's initial scale, the
# granularity (experts cut into slices in virtual groups, top-k scaled with them). The figure is the load
# at initialisation, as above.

# %%
def load_at_init(experts: int, top_k: int, routing: str, router_std: float, granularity: int):
    plan = UpcyclePlan(n_experts=experts * granularity, top_k=min(top_k, experts) * granularity, routing=routing,
                       router_init_std=router_std, granularity=granularity)
    model = upcycle_model(dense, plan)
    return domain_load_figure({d: load.tolist() for d, load in expert_load_by_domain(model, SEQ).items()},
                              title=f"{plan.n_experts} experts, top-{plan.top_k}, {routing}, router std {router_std:g}: "
                                    "load at initialisation")


router_controls, router_state = live_figure(load_at_init, {
    "experts": widgets.IntSlider(value=8, min=2, max=16, description="experts", continuous_update=False),
    "top_k": widgets.IntSlider(value=2, min=1, max=4, description="top-k", continuous_update=False),
    "routing": widgets.Dropdown(options=["topk_softmax", "softmax_topk"], value="topk_softmax", description="routing"),
    "router_std": widgets.FloatLogSlider(value=0.02, base=10, min=-3, max=0, description="router std",
                                         continuous_update=False),
    "granularity": widgets.IntSlider(value=1, min=1, max=2, description="granularity", continuous_update=False)})
display(router_controls)

# %% [markdown]
# That uneven start is what the load-balancing loss has to fix (and, since every expert is the same MLP,
# it costs nothing in loss yet).
#
# ## 3. Training the upcycled model, live
#
# A short continued training (load-balancing loss × 0.001 and z-loss × 0.01, the paper's coefficients).
# Every step records the tokens each expert received:

# %%
records = train_steps(moe, pick(150, 40), lr=1e-3, seq_len=SEQ, eval_every=pick(25, 10), desc="moe")
live = as_run("upcycled MoE (live)", records)
expert_load_heatmap(live, title="Tokens per expert over training (share per layer; white = uniform)")

# %%
router_metrics_figure([live], title="Router during training: balance, z-loss, entropy")

# %%
trained = [r for r in records if r.get("event") == "train" and r.get("aux_loss") is not None]
first, last = trained[0], trained[-1]
print(f"load-balancing loss (1 = every expert gets its share): step {first['step']} {first['aux_loss']:.3f}, "
      f"step {last['step']} {last['aux_loss']:.3f}")

# %%
domain_load_figure({d: load.tolist() for d, load in expert_load_by_domain(moe, SEQ).items()},
                   title="Expert load per layer and domain, after training")

# %% [markdown]
# Compare with the figure at init, and read the line above. With the paper's coefficient (0.001) the
# balancing loss is a weak pull against the language-model loss, and in this run the load does not even
# out: the load-balancing loss rises, the router sends more of the tokens to fewer experts, and the colour
# scale (which widens to the largest share) shows one expert per layer taking far more than its 1/8.
# Nothing in the language-model loss asks for balance: identical experts are equally good, so the router
# keeps whichever ones its first steps favoured. Whether domains begin to prefer different experts is the
# second thing to look for; a few dozen steps move the router only a little (the fast version,
# `LAB_FAST=1`, trains 40), so the reference runs below, trained longer, are where that trend shows.
#
# ## 4. Routing choices, from the reference runs
#
# `data/runs/routing/` holds short MoE trainings upcycled from the same dense source (recipe
# `tiny-moe.yaml`), one per variant: top-k-then-softmax (the default), softmax-then-top-k, without the
# load-balancing loss, without the z-loss, and 16 half-size experts in virtual groups of 2 (top-4, the same
# active compute).

# %%
ORDER = ("topk-softmax", "softmax-topk", "no-aux-loss", "no-z-loss", "granularity-2")
routing = reference_group("routing", ORDER)
if not routing:
    print(missing_note("the routing reference runs"))
fig = loss_figure(list(routing.values()), x="step", metric="loss", smoothing=0.6,
                  title="Training loss of the routing variants") if routing else None
fig

# %%
fig = router_metrics_figure(list(routing.values()), smoothing=0.6,
                            title="Balance, z-loss and entropy of the routing variants") if routing else None
fig

# %% [markdown]
# What to look for: without the load-balancing loss nothing pushes the router towards an even load, so
# its balance metric (1 = perfectly even) is free to drift up; without the z-loss nothing holds the
# router's logits small, so its z-loss (still recorded, though not optimised) is free to grow. How far
# each drifts within these short runs is what the curves above measure — at toy scale and a few dozen
# steps the effects can be small. The load per expert of the default and of the run without balancing:

# %%
for name in ("topk-softmax", "no-aux-loss"):
    if name in routing:
        expert_load_heatmap(routing[name], title=f"{name}: tokens per expert").show()

# %% [markdown]
# **The seeded experiment.** The reference runs above are one short run each. The experiment `upcycle`
# (`python -m lab experiments run upcycle`) upcycles the pretrained `source-deep` over seeds and trains
# each variant 200 steps, the dense model for the same FLOPs; its per-seed results, and the claims of
# He et al. they test, judged by the rule of `lab/experiments/claims.py` (empty until the experiment has
# been exported to `data/runs/experiments/`):

# %%
per_seed_table("upcycle", [f"{run}/trained_loss" for run in ("dense", "topk-softmax", "softmax-topk", "granularity-2",
                                                           "no-aux-loss", "no-z-loss")]
               + ["topk-softmax/load_cv", "no-aux-loss/load_cv"])

# %%
claims_table(["C9", "C10", "C11", "C12", "C13"])

# %% [markdown]
# Read the verdicts against the paper. Over seeds 0-2 the upcycled MoE starts exactly at the dense loss
# (C9), softmax-then-top-k ends below top-k-then-softmax (C11) and the load-balancing loss keeps the load
# more even (C13), as He et al. report; but after 200 steps the MoE ends above the dense model trained for
# the same FLOPs (C10) and granularity 2 above granularity 1 (C12), the opposite of their results. Compare
# the `no-z-loss` row with the dense row: without the router z-loss the MoE ends level with the dense
# model. With the paper's coefficient summed over eight layers, the z-loss of a near-uniform router is
# 8 × (ln 8)² ≈ 35, a tenth of the first step's training loss, and the router spends these short runs
# pushing its logits down. One-seed pilots (the README, Experiments over seeds; `recipes/pilots/`) point the
# same way: at the source's own batch of 8,192 tokens the MoE with the summed router losses stayed flat
# over 60 steps while the dense model given its FLOPs improved by 0.007, and with the losses averaged over
# layers the MoE ended within 0.0016 of the dense model, still falling faster. Longer runs at that batch
# are what C10 and C12 need next; these are pilots, not verdicts.

# %% [markdown]
# ## 5. Drop-Upcycling: copies that can specialise
#
# Upcycled experts start identical, and identical experts chosen together get similar updates: they
# separate slowly (notebook 01's symmetry problem, now between experts). Drop-Upcycling (Nakamura et al.
# 2025) re-initialises a random fraction $r$ of each expert's intermediate units (different units per
# expert), which makes the experts different from the start at the price of an inexact initialisation
# (section 1's table). Cosine similarity between the 8 experts of layer 0:

# %%
matrices_figure({"sparse upcycling": cosine_matrix(expert_units(moes["top-k → softmax (Mixtral)"], 0)),
                 "Drop-Upcycling, r = 0.5": cosine_matrix(expert_units(moes["Drop-Upcycling r=0.5"], 0))},
                title="Similarity between experts at initialisation (layer 0)")

# %% [markdown]
# ## Exercises
#
# 1. Upcycle with `top_k=1`. Is top-k-then-softmax still exact? What weight does the single expert get?
# 2. Set `router_init_std=1.0`: what happens to the router entropy at init, and to the load per domain?
# 3. Train the live MoE twice more, with `aux_loss_coef=0` and with `aux_loss_coef=0.1` (pass them in
#    `UpcyclePlan`), and compare `router_metrics_figure` of the three runs.
# 4. With softmax-then-top-k and scaling by $E/k$, the upcycled model is close but not equal to the dense
#    one. Why exactly is it not equal? (Hint: what do the top-2 probabilities of a near-uniform softmax
#    sum to?)
# 5. Track `cosine_matrix(expert_units(moe, 0))` over training for plain upcycling and for
#    Drop-Upcycling (use `on_step` of `train_steps`). Do the plain copies ever separate?
