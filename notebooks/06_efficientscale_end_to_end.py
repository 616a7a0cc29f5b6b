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
# # 06 · EfficientScale end to end
#
# The whole method on small models: **Preparation** (train a small dense model), **Scale-Up** (grow it
# with AKI-Pro, train on), **Scale-Out** (upcycle to 8 experts, top-2, train on) — and the question the
# paper asks: at equal compute, is the result better than training the final MoE from scratch?
#
# First a miniature pipeline live, in memory, in a minute or two; then the reference run of
# `recipes/efficientscale-tiny.yaml` made by `python -m lab pipeline` (stored in `data/runs/`), whose
# curves are longer than a notebook should train.

# %%
import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import display

import lab
from lab.flops import flops_per_token
from lab.growth import plan_growth
from lab.derive import grow_model, upcycle_model
from lab.plots.curves import loss_figure
from lab.plots.style import finish, named_color
from lab.teach.claims import claims_table, per_seed_table
from lab.teach.controls import live_figure
from lab.teach.display import setup_plotly
from lab.teach.fast import pick, setup_torch
from lab.teach.loop import as_run, events, train_steps, val_loss
from lab.teach.reference import missing_note, reference_run
from lab.upcycle import UpcyclePlan

setup_plotly()
setup_torch()  # seeded; one CPU thread, fastest for models this small (LAB_THREADS to change)

# %% [markdown]
# ## 1. A miniature pipeline, live
#
# | stage | model | how it starts |
# |---|---|---|
# | preparation | dense, 2 layers × 64 | random |
# | scale-up | dense, 3 layers × 128, 8 q heads | AKI-Pro from the preparation model |
# | scale-out | 8 experts, top-2, 3 layers × 128 | sparse upcycling of the scale-up model |
#
# `train_steps` continues the step, token and FLOP counters across stages, so the three stages form one
# curve; each stage starts with an evaluation of the freshly transformed model — the loss right after
# the transition.

# %%
SEQ, LR = 64, 2e-3
STEPS = {"preparation": pick(300, 100), "scale-up": pick(150, 50), "scale-out": pick(100, 30)}
EVAL = pick(25, 10)

small_cfg = lab.ModelConfig(dim=64, n_layers=2, n_heads=4, ffn_dim=128, max_seq_len=256)
model = lab.DecoderLM(small_cfg)
records, step, tokens, flops = [], 0, 0, 0.0
for stage, steps in STEPS.items():
    if stage == "scale-up":
        model = grow_model(model, plan_growth(model.config, method="aki-pro", dim=128, n_heads=8, ffn_dim=256,
                                              n_layers=3))
        grown_cfg = model.config
    elif stage == "scale-out":
        model = upcycle_model(model, UpcyclePlan(n_experts=8, top_k=2))
    new = train_steps(model, steps, lr=LR, warmup=10, seq_len=SEQ, first_step=step,
                      tokens=tokens, flops=flops, eval_every=EVAL, desc=stage)
    records += [{"stage": stage, **r} for r in new]
    step, tokens, flops = new[-1]["step"], new[-1]["tokens"], new[-1]["flops"]
final_cfg = model.config
print(f"pipeline: {step} steps, {tokens:,} tokens, {flops:.3g} FLOPs; final model {model.num_parameters():,} parameters")

# %% [markdown]
# **The baseline**: the final MoE shape, trained from scratch on the same FLOPs. Its FLOPs per token are
# the MoE's (`lab.flops.flops_per_token`), higher than the small models', so it gets fewer tokens.

# %%
batch = pick(8, 4)
baseline_steps = max(1, round(flops / (flops_per_token(final_cfg, SEQ) * batch * SEQ)))
baseline = lab.DecoderLM(final_cfg)
baseline_records = train_steps(baseline, baseline_steps, lr=LR, warmup=10, seq_len=SEQ, batch_size=batch,
                               eval_every=EVAL, desc="baseline")
pipeline_run, baseline_run = as_run("EfficientScale (live)", records), as_run("from scratch (live)", baseline_records, "baseline")
print(f"baseline: {baseline_steps} steps, {baseline_records[-1]['flops']:.3g} FLOPs")
loss_figure([pipeline_run, baseline_run], x="flops", metric="val_loss_mean", log_x=False,
            title="Validation loss against training FLOPs: the three stages and the baseline")

# %%
rows, previous = [], None
for stage in STEPS:
    evals = [r for r in records if r["stage"] == stage and r["event"] == "eval"]
    rows.append({"stage": stage, "loss before the transition": previous, "right after": evals[0]["val_loss_mean"],
                 "end of stage": evals[-1]["val_loss_mean"]})
    previous = evals[-1]["val_loss_mean"]
rows.append({"stage": "baseline (same FLOPs)", "end of stage": events(baseline_records, "eval")[-1]["val_loss_mean"]})
pd.DataFrame(rows).set_index("stage")

# %% [markdown]
# **Stage budgets.** Equal FLOPs is the rule of the comparison: move the steps of each stage and see how
# many tokens the pipeline trains on, stage by stage, and how many the from-scratch baseline gets for the
# same FLOPs (its MoE spends more per token than the small dense models).

# %%
shapes = {"preparation": small_cfg, "scale-up": grown_cfg, "scale-out": final_cfg}


def budget_figure(preparation: int, scale_up: int, scale_out: int):
    steps = {"preparation": preparation, "scale-up": scale_up, "scale-out": scale_out}
    tokens = {stage: n * batch * SEQ for stage, n in steps.items()}
    total_flops = sum(tokens[s] * flops_per_token(shapes[s], SEQ) for s in steps)
    baseline_tokens = total_flops / flops_per_token(final_cfg, SEQ)
    fig = go.Figure([go.Bar(x=["EfficientScale"], y=[tokens[s]], name=s, marker_color=named_color(s, i))
                     for i, s in enumerate(steps)]
                    + [go.Bar(x=["from scratch"], y=[baseline_tokens], name="baseline", marker_color=named_color("baseline", 3))])
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="training tokens")
    return finish(fig, f"{total_flops:.3g} FLOPs: the pipeline trains {sum(tokens.values()):,} tokens, "
                       f"the baseline {baseline_tokens:,.0f}")


budget_controls, budget_state = live_figure(budget_figure, {
    name.replace("-", "_"): widgets.IntSlider(value=n, min=0, max=4 * n, description=name, continuous_update=False)
    for name, n in STEPS.items()})
display(budget_controls)

# %% [markdown]
# Read the table as the paper's Figure 4 and Table 1/2 together: the scale-out transition keeps the loss
# exactly (upcycling with top-k-then-softmax is the dense model); the scale-up transition (AKI-Pro)
# costs some loss and has to recover. At this tiny budget whether the pipeline beats the baseline is
# not a given: the baseline trains its bigger model on fewer tokens, the pipeline spends most of its
# tokens on a smaller model. Run in full it does here (the table's last column). Over seeds 0, 1 and 2 it
# did every time, by 0.20 to 0.27 (the instructors' solutions give the numbers, measured on an earlier version
# of the lab: its CPU linears now run through oneDNN, whose different rounding moves these losses in the second
# decimal; seed 0 ends at 4.773 against 5.041 there, at 4.733 against 5.042 in a full run now, and with
# `lab.fast_linear` turned off its pipeline ends at 4.773 again); the fast run's steps are too few to say.
# The reference run below trains much longer.
#
# ## 2. The reference pipeline
#
# `python -m lab pipeline --recipe recipes/efficientscale-tiny.yaml --out runs/efficientscale-tiny`
# (metrics kept in `data/runs/efficientscale-tiny/`, the baseline in `data/runs/efficientscale-tiny-baseline/`).
# Stage boundaries are marked on the curves.

# %%
ref, ref_baseline = reference_run("efficientscale-tiny"), reference_run("efficientscale-tiny-baseline")
if ref is None:
    print(missing_note("the reference pipeline run"))
fig = loss_figure([r for r in (ref, ref_baseline) if r is not None], x="flops", metric="loss", smoothing=0.8,
                  title="Reference pipeline: training loss against FLOPs") if ref is not None else None
fig

# %%
fig = loss_figure([r for r in (ref, ref_baseline) if r is not None], x="flops", metric="val_loss_mean",
                  log_x=False, title="Reference pipeline: validation loss against FLOPs") if ref is not None else None
fig

# %%
def at_flops(run, flops):
    """The run's evaluation nearest to `flops` (its validation loss and FLOPs)."""
    evals = [e for e in run.events("eval") if e.get("val_loss_mean") is not None]
    best = min(evals, key=lambda e: abs((e.get("flops") or 0) - flops)) if evals else None
    return (best["val_loss_mean"], best["flops"]) if best else (None, None)


if ref is not None:
    stages = list(dict.fromkeys(r.get("stage") for r in ref.events("eval")))
    summary = []
    for stage in stages:
        evals = [e for e in ref.events("eval") if e.get("stage") == stage and e.get("val_loss_mean") is not None]
        summary.append({"stage": stage, "right after the transition": evals[0]["val_loss_mean"],
                        "end of stage": evals[-1]["val_loss_mean"], "FLOPs at end": evals[-1].get("flops")})
    end = max(r.get("flops") or 0 for r in ref.metrics.records)
    if ref_baseline is not None:
        loss, at = at_flops(ref_baseline, end)
        summary.append({"stage": "baseline, nearest to the same FLOPs", "end of stage": loss, "FLOPs at end": at})
    reference_table = pd.DataFrame(summary).set_index("stage")
else:
    reference_table = None
reference_table

# %% [markdown]
# What to look for: the jumps at the stage boundaries (the scale-out one should be invisible), how many
# steps each stage needs to get back below the previous stage's loss, and the last row against the one
# above it — the toy version of the paper's claim. At toy scale the data is tiny and the models see it
# many times over, so the gap to the baseline need not have the paper's sign or size; the compute
# accounting of notebook 05 is the part that carries over unchanged.
#
# ## 3. The seeded experiment: claims C14 and C15
#
# The experiment `pipeline` (`python -m lab experiments run pipeline --seeds 3`) runs the same three
# stages at the scale of the pretrained source (M(8, 128) from scratch for 320 steps, AKI-Pro to
# M(12, 256) for 96, 8 experts top-2 for 48) and trains the final MoE from scratch on the same FLOPs at
# three learning rates, keeping the best. Its seeds (`data/runs/experiments/seed-0/pipeline/`):

# %%
per_seed_table("pipeline", ["pipeline/final_loss", "baseline/best_loss", "baseline/best_lr",
                            "baseline-lr0.00025/final_loss", "baseline-lr0.0005/final_loss", "baseline-lr0.001/final_loss",
                            "grow/before_loss",
                            "grow/after_loss", "grow/quarter_loss", "upcycle/before_loss", "upcycle/quarter_loss"])

# %%
claims_table(["C14", "C15"])

# %% [markdown]
# The same experiment over seeds 1000-1002 (`data/runs/experiments/seed-1000/pipeline/`, judged in
# `data/claims-seed-1000.json`):

# %%
per_seed_table("pipeline", ["pipeline/final_loss", "baseline/best_loss", "baseline/best_lr", "grow/before_loss",
                            "grow/quarter_loss", "upcycle/before_loss", "upcycle/quarter_loss"], base=1000)

# %% [markdown]
# Both claims are judged over seeds 0-2. The pipeline ends 0.48-0.55 below the best from-scratch baseline on
# every seed (C15 holds: 5.000, 4.964, 4.919 against 5.478, 5.476, 5.470), the paper's premise at this scale.
# The baseline's best learning rate is 5e-4 on every seed, inside the three it tried (2.5e-4 ends near 5.77,
# 1e-3 at 5.49-5.60), so the comparison is not won by a badly tuned baseline. "Quick recovery" does not hold
# (C14 contradicted): a quarter of the way into the grown stage the loss is still 0.10-0.14 above where the
# dense stage ended (5.138, 5.107, 5.069 against 5.000, 4.974, 4.970). Even the upcycling, which keeps the
# loss exactly, is 0.004-0.058 above its starting loss a quarter of the way in, while a fresh optimizer's
# first steps shake the model. The grown stage ends below where the dense stage ended on every seed; the MoE
# stage ends 0.006-0.030 *above* the loss it was upcycled at, the shortfall of claim C10 in notebook 04. At
# this scale the pipeline's win over the baseline comes from training small first and growing, not from the
# experts. Seeds 1000-1002 (the second table) give both verdicts again: the pipeline ends at 5.009,
# 5.074 and 4.972 against the best baselines' 5.434, 5.554 and 5.488, and a quarter into the grown stage the
# loss is 0.09-0.16 above where the dense stage ended.
#
# ## Exercises
#
# 1. In section 1 replace AKI-Pro by FPI (`method="fpi", depth="identity"`): the scale-up transition now
#    keeps the loss. Does the pipeline end lower or higher?
# 2. Move budget between stages: halve the preparation steps and double the scale-out steps. What
#    happens to the final loss and to the total FLOPs?
# 3. Compute the time savings of the live pipeline with `lab.flops.savings`: build one `Phase` per
#    stage from its tokens and measured tokens/s (devices=1) and a `Phase` for the baseline.
# 4. Run the reference pipeline yourself (`python -m lab pipeline --recipe recipes/efficientscale-tiny.yaml
#    --out /tmp/es`), stop it with Ctrl-C in the scale-up stage, and resume it with `--resume`. Open its
#    `metrics.jsonl` with `lab.runs.load_run` and check that no step appears twice.
