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
# 4. shows why Drop-Upcycling re-initialises part of each expert;
# 5. trains the same upcycled model with aux-loss-free balancing (DeepSeek-V3) next to the load-balancing loss;
# 6. builds a shared expert out of the dense MLP (DeepSeekMoE, Qwen2-MoE) and checks which part is exact.

# %%
import math

import ipywidgets as widgets
import pandas as pd
import torch
from IPython.display import display

import lab
from lab.mlp import MLP
from lab.plots.curves import loss_figure
from lab.plots.experts import domain_load_figure, expert_load_heatmap, router_metrics_figure
from lab.plots.matrices import matrices_figure
from lab.teach.claims import claims_table, per_seed_table
from lab.teach.controls import live_figure
from lab.teach.display import setup_plotly
from lab.teach.experts import expert_load_by_domain, load_cv, with_load_cv
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
# ## 6. Balancing without an auxiliary loss
#
# The load-balancing loss of section 3 is a gradient that competes with the language-model loss: too weak
# and the load stays uneven (section 3); too strong and, as Wang et al. measure, it costs model quality. **Aux-loss-free balancing**
# (Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts", arXiv 2408.15664;
# used by DeepSeek-V3, arXiv 2412.19437, 2.1.2) takes balance out of the loss. Each expert $e$ of a layer gets a
# bias $b_e$ that is added to its router probability *for choosing the top-k only*; the combine weights are the
# unbiased probabilities, so the bias decides which experts run, never how much they count, and no gradient
# reaches it. After every optimizer step
#
# $$b_e \leftarrow b_e + \gamma\, \operatorname{sign}(\bar c - c_e),$$
#
# with $c_e$ the tokens expert $e$ received in that step, $\bar c$ their mean and $\gamma$ the bias rate
# (`balance_bias_rate`, 0.001 by default): an overloaded expert is made less likely to be chosen, an idle one
# more. In the lab it is `ModelConfig.balance = "aux_free"` (`lab/moe.py` routes, `lab/train/balance.py`
# updates the biases, each train record carries them as `expert_bias`); `"aux_loss"` is section 3's model and
# `"none"` balances nothing. The load-balancing loss is still computed and logged under all three, as a
# measure. The upcycled model starts with zero biases, so upcycling stays exact (printed below).
#
# Section 3's training was the `aux_loss` run. The same upcycled model, data and steps with the other two:

# %%
balance_records = {"aux_loss": records}   # section 3: load-balancing loss x 0.001
for balance in ("aux_free", "none"):
    model = upcycle_model(dense, UpcyclePlan(balance=balance))
    gap, _, _ = compare(dense, model, tokens)
    print(f"{balance}, as upcycled: max |logit gap| to the dense model {gap:.1e}")
    balance_records[balance] = train_steps(model, pick(150, 40), lr=1e-3, seq_len=SEQ, eval_every=pick(25, 10),
                                           desc=balance)
balance_runs = {name: as_run(name, with_load_cv(recs)) for name, recs in balance_records.items()}
router_metrics_figure(list(balance_runs.values()), metrics=("load_cv", "lm_loss", "aux_loss"), smoothing=0.6,
                      title="Balance by loss, by bias, or not at all (smoothed)")

# %%
expert_load_heatmap(balance_runs["aux_free"], title="aux_free: tokens per expert over training (white = uniform)")

# %%
def balance_summary(recs: list[dict]) -> dict:
    train = [r for r in recs if r.get("event") == "train"]
    last = train[-max(1, len(train) // 4):]   # the last quarter of the steps, counts summed: less batch noise
    summed = torch.tensor([r["tokens_per_expert"] for r in last]).sum(0)
    biases = last[-1].get("expert_bias")
    return {"load CV, first step": load_cv(train[0]["tokens_per_expert"]),
            "load CV, last quarter": load_cv(summed),
            "LM loss, last quarter": sum(r["lm_loss"] for r in last) / len(last),
            "validation loss, end": [r for r in recs if r.get("event") == "eval"][-1]["val_loss_mean"],
            "largest |expert bias|": max(abs(b) for layer in biases for b in layer) if biases else float("nan")}


pd.DataFrame({name: balance_summary(recs) for name, recs in balance_records.items()}).T.style.format(
    "{:.4f}", na_rep="— (no bias)")

# %% [markdown]
# All three start from the same model, so at the same load CV on the first step (0.49 in the full run, 0.82 in
# the fast run, `LAB_FAST=1`, whose first batch is smaller). Read the table: summed over the last quarter of the steps, the aux-free router's load has a CV
# of 0.27, against 1.01 with the load-balancing loss and 1.00 with nothing (fast run, 40 steps; the full run's
# 150 steps give 0.07 against 1.04 and 1.16). The bias did what the loss at the paper's 0.001 did not begin to
# do: `aux_loss` ends as uneven as `none`, or nearly, that coefficient being too weak to matter here (section 3). Step
# by step the picture is noisier (the top panel: one batch of a few hundred tokens × top-2 per step). The bias
# moves by a fixed $\gamma$ each step in the direction the last batch asked for, so the load moves from expert
# to expert rather than settling, and the balance shows in the counts summed over steps more than in any single
# step. At the end the largest bias is 0.026 in the fast run and 0.032 in the full one, about a quarter of
# the uniform probability 1/8 it is added to.
#
# The price in this run: none that shows. The LM loss over the last quarter and the validation loss at the
# end differ between the three by 0.002 or less in the fast run (0.004 at most in the full one). This is one
# seed and a few dozen steps of a 2-layer model, a demonstration of the mechanism rather than a comparison of
# the methods: Wang et al. report better balance *and* a lower perplexity than the auxiliary loss for 1B and 3B
# models trained on 100B and 200B tokens, and this run neither supports nor contradicts the second half of
# that.
#
# **The seeded experiment.** `balance` upcycles the pretrained `source-deep` as `upcycle` does (8 experts,
# top-2) and trains it 400 steps of 16 x 128 tokens with the load-balancing loss (0.001, summed over layers)
# and with the expert biases (rate 0.001), over seeds (`data/runs/experiments/seed-0/balance/`):

# %%
per_seed_table("balance", ["aux-loss/load_cv", "aux-free/load_cv", "aux-loss/trained_loss", "aux-free/trained_loss"])

# %%
claims_table(["C16", "C16b"])

# %% [markdown]
# The same experiment over seeds 1000-1002 (`data/runs/experiments/seed-1000/balance/`, judged in
# `data/claims-seed-1000.json`):

# %%
per_seed_table("balance", ["aux-loss/load_cv", "aux-free/load_cv", "aux-loss/trained_loss", "aux-free/trained_loss"],
               base=1000)

# %% [markdown]
# At this budget the biases do what section 6 showed in miniature, on every seed: a coefficient of variation
# of tokens per expert of 0.009-0.012 against 0.388-0.397 with the load-balancing loss (C16 holds), and no
# price in loss: the two end within 0.0009 of each other, either way round (C16b, "no worse" within 0.01,
# holds). Seeds 1000-1002 (the second table) agree: 0.010-0.011 against 0.396-0.469, losses
# within 0.0007. Wang et al.'s lower perplexity is not seen here, nor its opposite.

# %% [markdown]
# ## 7. Shared experts
#
# DeepSeekMoE (Dai et al. 2024, arXiv 2401.06066) pairs fine-grained experts with a few **shared experts** that
# every token passes through; Qwen1.5-MoE and Qwen2-MoE carry them as one MLP gated per token by a sigmoid,
# $y = \text{routed}(x) + \sigma(w_g \cdot x)\, \text{shared}(x)$. Upcycling can build that from the dense MLP
# (`lab/upcycle/shared.py`). Cut the MLP into $G$ slices along its intermediate units; it is the sum of the $G$
# small MLPs. With $N$ shared experts:
#
# * the shared MLP is slices $0 \dots N-1$, its down projection multiplied by 2, its gate weight $w_g = 0$:
#   $\sigma(0) = 1/2$ for every token, and $\times 2$ then $\times 1/2$ is exact in binary floating point, so the
#   gated shared expert *is* those slices, bit for bit;
# * the routed experts are copies of the other $G - N$ slices in virtual groups of $G - N$ (section 1), one
#   router row per group, top-$k$ a multiple of $G - N$ so that a group fires whole, down projections
#   scaled by $G - N$.
#
# With top-k-then-softmax the routed part is then the remaining slices for any router, but the dense layer's
# one sum over units has become two sums added, so the whole layer agrees with the dense MLP to float
# rounding, not to the bit. Here $G = 4$, $N = 1$: a shared MLP of 32 units and 6 routed experts of 32 units
# in 2 groups of 3, top-3 (one group per token), so every token still runs 128 units. Each layer's input on the
# validation tokens, through the dense MLP and through the upcycled layer:

# %%
def mlp_inputs(model, ids) -> list[torch.Tensor]:
    """What each layer's MLP reads on `ids` (the normalised hidden states), (tokens, dim) per layer."""
    seen = []
    hooks = [block.mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0].flatten(0, -2)))
             for block in model.layers]
    with torch.no_grad():
        model(ids)
    for hook in hooks:
        hook.remove()
    return seen


def shared_exactness(plan: UpcyclePlan) -> dict:
    moe_model, G, N = upcycle_model(dense, plan), plan.granularity, plan.shared_experts
    width = N * dense_cfg.ffn_dim // G
    shared_gap = layer_gap = 0.0
    with torch.no_grad():
        for layer, x in enumerate(mlp_inputs(dense, tokens)):
            mlp, moe_layer = dense.layers[layer].mlp, moe_model.layers[layer].mlp
            slices = MLP(dense_cfg.dim, width)   # the dense MLP's first N slices, as an MLP of their own
            slices.gate_proj.weight.copy_(mlp.gate_proj.weight[:width])
            slices.up_proj.weight.copy_(mlp.up_proj.weight[:width])
            slices.down_proj.weight.copy_(mlp.down_proj.weight[:, :width])
            gated = torch.sigmoid(moe_layer.shared_expert_gate(x)) * moe_layer.shared_expert(x)
            shared_gap = max(shared_gap, (gated - slices(x)).abs().max().item())
            layer_gap = max(layer_gap, (moe_layer(x)[0] - mlp(x)).abs().max().item())
    logit_gap, _, _ = compare(dense, moe_model, tokens)
    return {"parameters": moe_model.num_parameters(), "gated shared expert vs its dense slices": shared_gap,
            "MoE layer vs dense MLP": layer_gap, "max |logit gap|": logit_gap}


shared_variants = {
    "G=4, 1 shared, 6 routed, top-3": UpcyclePlan(n_experts=6, top_k=3, granularity=4, shared_experts=1),
    "same, router std 1.0 (far from uniform)": UpcyclePlan(n_experts=6, top_k=3, granularity=4, shared_experts=1,
                                                           router_init_std=1.0),
    "same, softmax → top-k": UpcyclePlan(n_experts=6, top_k=3, granularity=4, shared_experts=1,
                                         routing="softmax_topk"),
}
pd.DataFrame({name: shared_exactness(plan) for name, plan in shared_variants.items()}).T.style.format(
    {"parameters": "{:,.0f}", "gated shared expert vs its dense slices": "{:.1e}", "MoE layer vs dense MLP": "{:.1e}",
     "max |logit gap|": "{:.1e}"})

# %% [markdown]
# The table says which part is exact. The gated shared expert equals its dense slices to the bit (a largest
# difference of 0 over every token of both layers), with the near-uniform router and with one 50 times wider:
# it does not involve the router at all. The whole layer equals the dense MLP to about 1e-6 and the logits to
# about 1e-5, float32 rounding of two sums where there was one, as for plain upcycling in section 1. With
# softmax-then-top-k the shared part is still bit-exact, but the routed part is not (a layer difference of 0.43
# and a logit gap of 0.92 in the full run, 0.51 and 0.59 in the fast run): the chosen probabilities do not sum to what the weight scaling
# assumes, section 1's inexact row again. The upcycled model has 644,672 parameters against 952,000 for eight
# full copies (section 1), since its seven experts are a quarter of the MLP each.

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
# 6. Train the `aux_free` model of section 6 with `balance_bias_rate` 0.01 and 0.0001 (pass them in
#    `UpcyclePlan`). How fast does the load CV fall, and what happens to the LM loss?
# 7. In section 7, upcycle with `granularity=4, shared_experts=2, n_experts=4, top_k=2`. Which slices are
#    shared, which experts form a group, and is the layer still the dense MLP?
