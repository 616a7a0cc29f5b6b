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
# # 02 · Depth growth: stacking, interpolation, identity blocks
#
# Width growth can be exact (notebook 01). Depth growth cannot, except by cheating with blocks that do
# nothing: a new layer reads a residual stream its weights were not trained on. Three ways to fill the
# new layers of a deeper model (AquilaMoE 2.2.1, Figure 2):
#
# * **stacking** (StackBERT, used by bert2BERT): repeat the whole stack on top of itself,
#   $3 \to 6$ layers: 0, 1, 2, 0, 1, 2;
# * **interpolation** (Pan et al. 2024; AKI-Pro): repeat each layer in place, 0, 0, 1, 1, 2, 2;
# * **identity blocks**: interpolation, with the projections that write into the residual stream
#   (attention's o and the MLP's down) zeroed in each inserted copy, so it computes exactly what the
#   source does. LLaMA-Pro's block expansion does the same but puts each copy after the *last* layer of
#   its group (`placement="last"`, $4 \to 6$: 0, 1, 1′, 2, 3, 3′); the order here puts it after the first.
#   Section 8 uses LLaMA-Pro's placement for its recipe: train only the new blocks, on new data.
#
# We grow the lab's pretrained source, look at the loss right after growth and how fast each rule
# recovers (the paper's Table 1 at small scale), and test on the source's layers the paper's reason for
# preferring a layer's *neighbour* as the initialiser of a new layer.

# %%
import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import display

import lab
from lab.paper import TABLE1_LOSS
from lab import paths
from lab.growth import half_again_deeper, inserted_copies, layer_order, plan_growth
from lab.derive import grow_model
from lab.plots.curves import loss_figure
from lab.plots.growth import init_loss_figure, layer_order_figure
from lab.plots.layers import layer_similarity_figure
from lab.plots.style import finish
from lab.teach.claims import claims_table, per_seed_table
from lab.teach.controls import live_figure
from lab.teach.display import setup_plotly
from lab.train.evaluate import validation_losses
from lab.teach.fast import pick, setup_torch
from lab.teach.layers import substitution_losses, weight_similarity
from lab.teach.loop import as_run, train_steps, val_loss, validation_windows
from lab.teach.reference import missing_note, reference_group
from lab.checkpoint.hf_config import INSERTED_LAYERS
from lab.train.trainable import freeze_all_but
from lab.verify import compare

setup_plotly()
setup_torch()  # seeded; one CPU thread, fastest for models this small (LAB_THREADS to change)

# %% [markdown]
# ## 1. Where each new layer comes from
#
# The source is the lab's pretrained `source-deep` (8 layers); the lab grows it to half again as many
# layers, 12, as its experiments do.

# %%
SOURCE_DIR = paths.DATA_DIR / "sources" / "source-deep"
source = lab.load_pretrained(SOURCE_DIR, dtype=torch.float32).eval()
source_cfg = source.config
SOURCE_LAYERS, TARGET_LAYERS = source_cfg.n_layers, half_again_deeper(source_cfg.n_layers)
orders = {kind: layer_order(SOURCE_LAYERS, TARGET_LAYERS, kind) for kind in ("stack", "interpolate", "identity")}
layer_order_figure(orders, inserted={"identity": inserted_copies(orders["identity"])},
                   title=f"{SOURCE_LAYERS} → {TARGET_LAYERS} layers: the source layer each new layer copies ('id': zeroed writers)")

# %% [markdown]
# ## 2. The source
#
# `source-deep` (data/sources/source-deep, its model card in README.md there) was pretrained on the lab's
# 27M-token corpus (English documentation, classical Chinese poetry, Python code, arithmetic). It has to
# be trained: in a random model no layer resembles another and the question "which layer is a good
# stand-in" has no answer. Its validation loss, on windows of 128 tokens of the shipped validation split
# (all of them in the full run, 24 per domain with `LAB_FAST=1`):

# %%
SEQ, WINDOWS = 128, pick(128, 24)
source_loss = val_loss(source, SEQ, WINDOWS)["mean"]
print(f"source: {SOURCE_LAYERS} layers, hidden size {source_cfg.dim}, validation loss {source_loss:.3f}")

# %% [markdown]
# ## 3. Why the neighbour: how alike the source's layers are
#
# Left, the cosine similarity of two layers' weights (projection by projection, averaged). Right, a
# functional test: the validation loss when layer $i$ computes with layer $j$'s weights and everything
# else is unchanged. Stacking asks the *first* layers to stand in after the *last* ones (the far
# corners); interpolation only asks each layer to stand in for itself, one slot later (the diagonal
# and its neighbours).

# %%
tokens = torch.cat(list(validation_windows(SEQ, pick(8, 4)).values()))
similarity, substituted = weight_similarity(source), substitution_losses(source, tokens)
layer_similarity_figure(similarity, substituted, title="Layers of the pretrained source")

# %% [markdown]
# Every layer, one row each: the model's own loss on these windows, the loss when the layer runs the
# weights of the layer just below it (what interpolation's repeated copy is asked to do: the copy of
# layer $i-1$ sits where layer $i$'s input arrives), and when it runs the weights of layer 0 and of the
# last layer (what stacking asks at the seam, where the old bottom layer follows the old top one).

# %%
L = SOURCE_LAYERS
own = substituted.diag()
per_layer = pd.DataFrame({
    "own weights": own.tolist(),
    "layer below (interpolation)": [float("nan")] + [substituted[i, i - 1].item() for i in range(1, L)],
    "layer 0's weights": substituted[:, 0].tolist(),
    "last layer's weights": substituted[:, L - 1].tolist(),
}, index=[f"layer {i}" for i in range(L)])
per_layer.style.format("{:.3f}")

# %%
near = torch.stack([substituted[i, i - 1] for i in range(1, L)])
far = torch.stack([substituted[i, j] for i in range(L) for j in range(L) if abs(i - j) > 1])
print(f"mean loss with the layer below's weights: {near.mean():.3f}; with a layer two or more away: "
      f"{far.mean():.3f}; the model itself: {own.mean():.3f}")
best = [min((j for j in range(L) if j != i), key=lambda j: substituted[i, j].item()) for i in range(L)]
print("best stand-in for each layer (its own weights excluded): "
      + ", ".join(f"{i}: layer {j}" for i, j in enumerate(best)))
print(f"layers whose best stand-in is the layer just below: {sum(best[i] == i - 1 for i in range(1, L))} of {L - 1}")

# %% [markdown]
# Read the table row by row. Layer 0 reads the embeddings directly, and no other layer can take its
# place: its row is the costliest. On average the paper's argument for interpolation holds here: a layer
# run with its neighbour's weights loses much less than with a distant layer's (the first printed line).
# Layer by layer it does not: the single best stand-in is rarely the layer just below (the last printed
# line), and a couple of early layers stand in best for most of the others (the list above). In this
# source the early layers compute something generic enough to serve almost anywhere, which the paper's
# "neighbouring layers are alike" does not describe. The loss right after growth (next section) is the
# direct test of what that means for stacking against interpolation.
#
# ## 4. Loss right after growth
#
# Grow 8 → 12 layers (width unchanged, FPI, so only the depth rule differs) and evaluate at once:

# %%
grown = {kind: grow_model(source, plan_growth(source_cfg, n_layers=TARGET_LAYERS, depth=kind)) for kind in orders}
after = {kind: val_loss(model, SEQ, WINDOWS)["mean"] for kind, model in grown.items()}
gap, _, _ = compare(source, grown["identity"], tokens)
print(f"identity blocks: max |logit gap| to the source {gap:.2e} (function preserved)")
for kind, loss in after.items():
    print(f"{kind:<12} {loss:.4f} ({loss - source_loss:+.4f} against the source)")
init_loss_figure(after, source_loss=source_loss, relative=True,
                 title=f"Validation loss right after {SOURCE_LAYERS} → {TARGET_LAYERS} layer growth, above the source's")

# %% [markdown]
# Move the target depth and see each rule's loss right after growth (on 8 windows per domain, so that a
# change takes a second or two; the numbers above use more):

# %%
probe = validation_windows(SEQ, 8)


def depth_at_init(target_layers: int):
    losses = {kind: validation_losses(grow_model(source, plan_growth(source_cfg, n_layers=target_layers,
                                                                     depth=kind)), probe, torch.device("cpu"))
              for kind in orders}
    means = {kind: sum(l.values()) / len(l) for kind, l in losses.items()}
    base = validation_losses(source, probe, torch.device("cpu"))
    return init_loss_figure(means, source_loss=sum(base.values()) / len(base), relative=True,
                            title=f"{SOURCE_LAYERS} → {target_layers} layers: loss right after growth, above the source's")


depth_controls, depth_state = live_figure(depth_at_init, {"target_layers": widgets.IntSlider(
    value=TARGET_LAYERS, min=SOURCE_LAYERS + 1, max=2 * SOURCE_LAYERS, description="layers", continuous_update=False)})
display(depth_controls)

# %% [markdown]
# Identity blocks keep the loss exactly (the logit gap above is at float rounding). Stacking against
# interpolation: the paper finds interpolation clearly better (24 → 32 layers with FPI: 2.97 → 4.30
# stacking, 3.31 interpolation), because under stacking the layer after the old top layer is the old
# *bottom* layer, which expects embeddings, not the output of the top layer. On this source the order is
# the paper's, but the gap is small: interpolation starts 0.017 below stacking on the whole validation
# split (0.003 on the fast run's windows), against the paper's 0.99. The seeded experiment (claim C2 in
# `data/claims.json`, with width growth too) judges it over seeds.
#
# ## 5. Recovery, live
#
# Continue training each grown model on the shipped corpus (a fresh optimizer, so a short warm-up: Adam's
# first steps move every weight by about the learning rate, whatever its gradient):

# %%
CONTINUE = pick(60, 20)
runs = []
for kind, model in grown.items():
    records = train_steps(model, CONTINUE, lr=3e-4, warmup=10, seq_len=SEQ, first_step=0,
                          eval_every=max(CONTINUE // 4, 1), eval_per_domain=WINDOWS, desc=kind)
    runs.append(as_run(kind, records))
loss_figure(runs, x="step", metric="val_loss_mean", title="Validation loss of the 12-layer models while training on")

# %%
recovery = pd.DataFrame({kind: {"right after growth": after[kind],
                                f"after {CONTINUE} steps": run.events("eval")[-1]["val_loss_mean"]}
                         for kind, run in zip(grown, runs)}).T
recovery["source"] = source_loss
recovery.style.format("{:.4f}")

# %% [markdown]
# Stacking and interpolation start about 0.1 above the source; identity blocks start at its loss. In the
# full run (60 steps) all three end below the source, the identity model lowest, and stacking and
# interpolation within a few thousandths of each other: interpolation's head start is gone. In the fast
# run (`LAB_FAST=1`, 20 steps) the grown models have not caught up yet, and the identity model first
# loses a little as the fresh optimizer sets its new blocks moving. The lab's experiments train longer,
# on larger batches, over seeds (`data/claims.json`, C5 and C6).
#
# ## 6. Table 1 at toy scale: the reference runs
#
# The longer comparison is in `data/runs/growth/`: a dense source trained with `recipes/tiny.yaml`, grown
# by each of the paper's Table 1 methods (FPI width only, FPI + stacking, FPI + interpolation, AKI +
# stacking, AKI-Pro, identity blocks, random initialisation) and trained on with the same recipe. Step 0 of
# each grown run is the loss right after growth.

# %%
ORDER = ("source", "fpi-width", "fpi-stack", "fpi-interpolate", "aki-stack", "aki-pro", "identity", "random")
# The paper's Table 1 (M(24, 2048) -> M(32, 4096); the source row is its loss before growth).
PAPER_TABLE1 = TABLE1_LOSS  # lab.paper: the paper's numbers, typed once
growth_runs = reference_group("growth", ORDER)
if growth_runs:
    rows = []
    for name, run in growth_runs.items():
        evals = [e for e in run.events("eval") if e.get("val_loss_mean") is not None]
        if evals:
            rows.append({"method": name, "right after growth": evals[0]["val_loss_mean"],
                         "end of training": evals[-1]["val_loss_mean"], "steps": evals[-1].get("step"),
                         "paper, right after growth": PAPER_TABLE1.get(name)})
    display_table = pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame()
else:
    display_table = None
    print(missing_note("the growth reference runs"))
display_table

# %%
if growth_runs:
    # Random initialisation starts near ln(vocabulary) and would squash every other curve into one band:
    # it is left out of the figure and stays in the table above.
    grown_runs = [run for name, run in growth_runs.items() if name not in ("source", "random")]
    fig = loss_figure(grown_runs, x="step", metric="val_loss_mean",
                      title="Table 1 methods, continued training (random initialisation: see the table)")
else:
    fig = None
fig

# %% [markdown]
# Compare the orderings, not the values: these reference runs grow a small source trained briefly with
# `recipes/tiny.yaml` (loss 5.21), one run each, so a gap of a few hundredths between two rows says
# nothing on its own. The paper's orderings are judged over seeds, from the pretrained source, with the
# rule of `lab/experiments/claims.py`, in the seeded experiment `table1` (claims C1-C6 of
# `data/claims.json`, with their per-seed values): section 7.
#
# ## 7. Table 1 over seeds: claims C1, C2, C4 and C6
#
# The seeded experiment `table1` (`python -m lab experiments run table1 --seeds 3`) grows the pretrained
# source M(8, 128) to M(12, 256) by each of the paper's methods, evaluates each right after growth on the
# whole validation split, and trains FPI + interpolation, AKI-Pro and the same shape from scratch for 200
# steps (batches of 16 x 128 tokens, peak learning rate 1e-3; 3e-3 from scratch). Its values per seed, as
# exported to `data/runs/experiments/seed-0/table1/`:

# %%
per_seed_table("table1", ["source/loss", "fpi-width/grown_loss", "fpi-stack/grown_loss", "fpi-interpolate/grown_loss",
                          "aki-stack/grown_loss", "aki-pro/grown_loss", "random/grown_loss",
                          "fpi-interpolate/trained_loss", "aki-pro/trained_loss", "random/trained_loss"])

# %%
claims_table(["C1", "C2", "C4", "C6"])

# %% [markdown]
# Right after growth the paper's orderings hold on this source, and identically on every seed: with the
# cyclic map and no noise nothing in growth is random, so each of these verdicts is the sign of one
# deterministic gap. FPI width-only keeps the source's loss (C1: 3.6177 both, a gap of 1.2e-7); FPI +
# interpolation starts 0.017 below FPI + stacking (C2; the paper's gap is 0.99: 3.31 against 4.30); the
# worst growth method, AKI-Pro at 4.667, starts 3.70 below random initialisation at 8.37, near
# ln 4096 = 8.32 (C4; the paper: 9.56 against 12.22). After 200 steps a grown model ends 1.68 below the
# same shape trained from scratch for as many steps (C6: AKI-Pro 3.79-3.81 against 5.42-5.52).
#
# Read the trained rows too: FPI + interpolation ends *above* where growth left it (3.7207 right after
# growth, 3.75-3.77 after 200 steps). Continued training at a quarter of the source's batch first costs
# more than it gains; the README's pilots trace this to the batch size. C2's head start is real but, at
# 0.017, small next to what the first steps of training do to any of these models.

# %% [markdown]
# ## 8. LLaMA-Pro: new blocks for new data
#
# LLaMA-Pro (Wu et al. 2024, "LLaMA Pro: Progressive LLaMA with Block Expansion", arXiv 2401.02415) uses identity
# blocks for a different purpose than Scale-Up: to teach a trained model a new domain without making it forget
# the old ones. It appends an identity copy after the *last* block of each group (`placement="last"`,
# `lab/growth/depth.py`), then trains **only the new blocks** on the new domain's data, with the original blocks,
# the embeddings and the output head frozen (`train.trainable: new-blocks` in a recipe, `lab/train/trainable.py`).
# The grown model starts as the source, as section 4 showed for the other placement; the frozen blocks cannot
# move; whatever the model learns has to go through the new blocks.
#
# Here the new domain is code, one of the four the source was trained on (so this is continued training on
# one domain, not a truly new one), and we compare the two ways of spending the same steps: the new blocks only,
# and every parameter. First the growth:

# %%
pro_plan = plan_growth(source_cfg, n_layers=TARGET_LAYERS, depth="identity", placement="last")
pro = grow_model(source, pro_plan)
new_blocks = tuple(pro.config.extra[INSERTED_LAYERS])   # what train.trainable: new-blocks trains
gap, _, _ = compare(source, pro, tokens)
print(f"layer order: {layer_order(SOURCE_LAYERS, TARGET_LAYERS, 'identity', 'last')}; new blocks: {list(new_blocks)}")
print(f"max |logit gap| to the source: {gap:.1e}")

# %% [markdown]
# Then the same number of steps on code only, from two copies of that model (the validation loss per domain on
# the 8 windows per domain of section 4's control, before and after):

# %%
CODE_STEPS = pick(60, 12)
before = validation_losses(pro, probe, torch.device("cpu"))
after_code, trained_counts, frozen_moved = {}, {}, {}
for label in ("new blocks only", "all parameters"):
    model = grow_model(source, pro_plan)
    trained_counts[label] = freeze_all_but(model, new_blocks) if label == "new blocks only" else model.num_parameters()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    train_steps(model, CODE_STEPS, lr=3e-4, warmup=5, seq_len=SEQ, domains=["code"], desc=label)
    after_code[label] = validation_losses(model, probe, torch.device("cpu"))
    if frozen:  # LLaMA-Pro's promise: what is frozen does not move at all
        frozen_moved[label] = max((p - frozen[name]).abs().max().item() for name, p in model.named_parameters()
                                  if name in frozen)
for label in after_code:
    moved = (f"largest change of a frozen parameter {frozen_moved[label]:.1e}" if label in frozen_moved
             else "nothing frozen")
    print(f"{label}: {trained_counts[label]:,} of {pro.num_parameters():,} parameters trained; {moved}")
forgetting = pd.DataFrame({"before": before, **{f"after, {label}": losses for label, losses in after_code.items()}})
for label in after_code:
    forgetting[f"change, {label}"] = forgetting[f"after, {label}"] - forgetting["before"]
forgetting.loc["mean"] = forgetting.mean()
forgetting.style.format("{:+.4f}", subset=[c for c in forgetting if c.startswith("change")]).format(
    "{:.4f}", subset=[c for c in forgetting if not c.startswith("change")])

# %%
fig = go.Figure([go.Bar(name=label, x=list(before), y=[after_code[label][d] - before[d] for d in before])
                 for label in after_code])
fig.update_yaxes(title="validation loss after − before")
finish(fig, f"{CODE_STEPS} steps on code: change of each domain's loss")

# %% [markdown]
# The new blocks hold 739,328 of the 3,266,688 parameters, and the frozen rest did not move at all (a largest
# change of 0). In the fast run (`LAB_FAST=1`, 12 steps of 4 sequences of code) neither way of training has
# learnt code yet: the code loss is 0.008 higher after training the new blocks and 0.001 higher after training
# everything. In the full run (60 steps of 8 sequences) training everything lowers the code loss by 0.007, and
# training the new blocks still raises it, by 0.016, as the identity model of section 5 first lost a little
# while the fresh optimizer set its new blocks moving. What both run sizes show is the cost on the
# other domains. Training every parameter on code raised English by 0.027 (fast) and 0.159 (full) and
# arithmetic by 0.009 and 0.028; training only the new blocks moved the other domains by 0.011 or less, English
# downwards. Forgetting came in the run that let the old blocks move.
#
# One seed, a few dozen steps at most, 8 validation windows per domain: a demonstration of the mechanism.
# LLaMA-Pro's result (new code and mathematics skills with the general benchmarks kept, LLaMA2-7B grown to 8.3B
# and trained on 80B tokens) is at a scale this notebook does not reach. The seeded experiment `llama_pro`
# measures the forgetting over seeds at a larger budget: the same growth, then 300 steps of 16 x 128 tokens of
# code at a peak learning rate of 1e-3, new blocks only and every parameter, evaluated on the whole
# validation split (`data/runs/experiments/seed-0/llama_pro/`):

# %%
per_seed_table("llama_pro", ["new-blocks/start_other_loss", "new-blocks/other_loss", "all/other_loss",
                             "new-blocks/domain_loss", "all/domain_loss"])

# %%
claims_table(["C18"])

# %% [markdown]
# Over seeds 0-2 the other domains' mean loss, 3.5505 at the start, ends at 3.573-3.582 when only the new
# blocks train and at 3.873-3.951 when every weight does (C18 holds, 0.33 apart). The price shows too: the
# code loss ends 0.06 higher with the new blocks alone (3.776-3.781 against 3.714-3.725). Whether more steps
# on code close that gap while the old domains stay put, LLaMA-Pro's result, is beyond this budget.
#
# ## Exercises
#
# 1. Grow 8 → 16 layers instead (`n_layers=16`): which layers does interpolation repeat, and which does
#    stacking? Predict from the substitution heatmap which rule loses less, then check.
# 2. Identity blocks preserve the function but start their inserted blocks at zero output. Plot the
#    gradient norm of an inserted block's `down_proj` over the first 10 steps: does it learn?
# 3. Replace `source` by a freshly initialised model and redo section 3. What does the heatmap look like,
#    and what does that say about interpolation for untrained models?
# 4. Combine width and depth: `plan_growth(source_cfg, dim=256, n_heads=8, ffn_dim=704, n_layers=12,
#    depth=...)`. Is the loss right after growth the same as with depth alone, and why (notebook 01)?
# 5. Repeat section 4 with `source-shallow` (4 layers, hidden size 192): does interpolation still start
#    below stacking?
# 6. In section 8, train the new blocks on arithmetic instead of code, and for three times as many steps. Which
#    domains' losses move now? Then put the new blocks after the first layer of each group
#    (`placement="first"`) and compare.
