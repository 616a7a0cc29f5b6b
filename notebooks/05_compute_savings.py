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
# # 05 · Compute savings: FLOPs per token, MFU, and the paper's Table 6
#
# EfficientScale's claim is economic: reach an 8x16B MoE for a fraction of the compute of training it
# from scratch. This notebook builds the accounting from the bottom:
#
# 1. **FLOPs per token** of a dense model, a grown one and an MoE (only the active experts count);
# 2. **MFU**, the fraction of the hardware's peak a training run turns into model FLOPs — measured live
#    on this machine, and implied by the paper's own throughput figures;
# 3. **Table 6** of the paper, with sliders on every figure so you can see which ones the two savings
#    factors (time ×4.12, compute ×3.35) depend on.
#
# All formulas live in `lab.flops`; the notebook only calls them.

# %%
import time

import pandas as pd
import plotly.graph_objects as go
import torch
from IPython.display import display

import lab
from lab.flops import PEAK_FLOPS, active_parameters, flops_per_token, mfu, savings
from lab.paper import TABLE6, TABLE6_SCRATCH
from lab.plots.savings import savings_figure
from lab.plots.style import finish
from lab.teach.display import setup_plotly
from lab.teach.fast import pick, setup_torch
from lab.teach.loop import train_steps
from lab.teach.savings_widget import savings_explorer

setup_plotly()
setup_torch()  # seeded; one CPU thread, fastest for models this small (LAB_THREADS to change)

# %% [markdown]
# ## 1. FLOPs per token
#
# Training one token costs about $6N$ FLOPs for the $N$ parameters its matmuls touch (2 forward, 4
# backward), plus the attention itself, $12\,L\,H\,Q\,T$ (PaLM, appendix B; $L$ layers, $H$ query heads,
# $Q$ head_dim, $T$ sequence length):
#
# $$C_\text{token} = 6\,N_\text{active} + 12\,L\,H\,Q\,T.$$
#
# $N_\text{active}$ leaves out the input embedding (a lookup) and, in an MoE layer, counts only the
# `top_k` experts a token is routed to plus the router. That is why an 8-expert top-2 model has about
# four times the parameters of its dense source but costs only about twice as much per token.
# The three shapes of the tiny EfficientScale pipeline:

# %%
SEQ = 256
dense = lab.ModelConfig(dim=128, n_layers=4, n_heads=4, ffn_dim=384, max_seq_len=SEQ)
grown = dense.replace(dim=256, n_layers=6, n_heads=8, ffn_dim=768)
moe = grown.replace(n_experts=8, top_k=2, moe_ffn_dim=768)
shapes = {"dense 4×128": dense, "grown 6×256": grown, "MoE 8 experts, top-2": moe}

rows = []
for name, cfg in shapes.items():
    model = lab.DecoderLM(cfg)
    rows.append({"model": name, "total parameters": model.num_parameters(), "active parameters": active_parameters(cfg),
                 "FLOPs/token": flops_per_token(cfg, SEQ),
                 "attention share": 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * SEQ / flops_per_token(cfg, SEQ)})
flops_table = pd.DataFrame(rows).set_index("model")
flops_table.style.format({"total parameters": "{:,}", "active parameters": "{:,}", "FLOPs/token": "{:.3g}",
                          "attention share": "{:.1%}"})

# %%
fig = go.Figure([go.Bar(name="total parameters", x=flops_table.index, y=flops_table["total parameters"]),
                 go.Bar(name="active parameters (used per token)", x=flops_table.index, y=flops_table["active parameters"])])
fig.update_yaxes(title="parameters")
finish(fig, "An MoE holds many parameters but a token uses only top_k of the experts")

# %% [markdown]
# ## 2. MFU: how much of the peak becomes model FLOPs
#
# $$\text{MFU} = \frac{\text{tokens/s} \times C_\text{token}}{\text{peak FLOP/s}}.$$
#
# **Live, on this machine.** We time a few training steps of the dense model. A CPU's peak is not on a
# data sheet we can look up here; `CPU_PEAK` below is an assumption (one core with AVX2 FMA at about
# 3 GHz does roughly 32 × 3e9 ≈ 1e11 FP32 FLOP/s, times the threads torch uses — one by default in these
# notebooks) — change it to your machine's.

# %%
CPU_PEAK = 1e11 * torch.get_num_threads()
model = lab.DecoderLM(dense)
steps, batch = pick(20, 10), 4
train_steps(model, 1, batch_size=batch, seq_len=SEQ, desc="warm-up")
started = time.perf_counter()
train_steps(model, steps, batch_size=batch, seq_len=SEQ, desc="timed")
tokens_per_s = steps * batch * SEQ / (time.perf_counter() - started)
print(f"{tokens_per_s:,.0f} tokens/s x {flops_per_token(dense, SEQ):.3g} FLOPs/token "
      f"= {tokens_per_s * flops_per_token(dense, SEQ) / 1e9:.1f} GFLOP/s, "
      f"MFU {mfu(tokens_per_s, flops_per_token(dense, SEQ), CPU_PEAK):.1%} of the assumed {CPU_PEAK:.0e} FLOP/s")

# %% [markdown]
# **Implied by the paper.** Table 6 gives each phase's throughput in tokens per day on its cluster.
# With $C_\text{token} \approx 6N$ (the attention term is small at these sizes) the MFU that throughput
# implies follows (`Phase.utilisation`). The table's per-device rate is in TFLOP/s: 989.5 is the
# H100/H800 bf16 dense peak (preparation), 240 the other phases' devices. The implied MFUs:

# %%
rows = []
for phase in [*TABLE6, TABLE6_SCRATCH]:
    per_device = phase.tokens_per_day_b * 1e9 / 86400 / phase.devices
    rows.append({"phase": phase.name, "params (B)": phase.params_b, "tokens/s per device": per_device,
                 "implied MFU": phase.utilisation})
pd.DataFrame(rows).set_index("phase").style.format({"tokens/s per device": "{:,.0f}", "implied MFU": "{:.1%}"})

# %% [markdown]
# For comparison, `lab.flops.PEAK_FLOPS` holds the data-sheet peaks the CLI uses:

# %%
pd.Series(PEAK_FLOPS, name="peak FLOP/s (bf16 dense)").to_frame().style.format("{:.3g}")

# %% [markdown]
# ## 3. Table 6: the two savings factors
#
# Each phase $i$ trains $N_i$ tokens at $R_i$ tokens per day on a cluster of $G_i$ TFLOP/s in total
# (devices × TFLOP/s per device):
#
# $$\text{time savings} = \frac{N_s / R_s}{\sum_i N_i / R_i}, \qquad
#   \text{compute savings} = \frac{(N_s / R_s)\, G_s}{\sum_i (N_i / R_i)\, G_i},$$
#
# with $s$ the 8x16B trained from scratch on the same 5,345 B tokens. The paper's figures:

# %%
table = pd.DataFrame([{**{k: getattr(p, k) for k in ("name", "devices", "tflops_per_device", "params_b", "tokens_b",
                                                     "tokens_per_day_b")}, "days": p.days}
                      for p in [*TABLE6, TABLE6_SCRATCH]]).set_index("name")
time_factor, compute_factor = savings(TABLE6, TABLE6_SCRATCH)
print(f"time savings x{time_factor:.2f}, compute savings x{compute_factor:.2f}")
table.round(1)

# %%
savings_figure(TABLE6, TABLE6_SCRATCH)

# %% [markdown]
# Most of the saving comes from the scale-out model's low throughput (25 B tokens/day): from scratch
# it has to chew through all 5,345 B tokens at that rate (214 days), while the pipeline spends only
# 545 B tokens there and does the bulk on the faster small models. Compute savings are smaller than time
# savings because the preparation phase ran on a faster cluster.
#
# ### Move the sliders
#
# One tab per phase. The sliders are the figures a team chooses: tokens, devices, each device's rate
# (TFLOP/s) and the utilisation; tokens per day and days follow from them, as they would on a real
# cluster (twice the devices, twice the tokens per day at the same utilisation). Every slider spans a
# tenth to ten times the paper's value (utilisation stops at 1). Questions to try: what happens to both
# factors if the scale-out phase gets twice the tokens? If the preparation ran on devices as slow as the
# others'? (The widget needs a live kernel: in an executed, static copy of this notebook it shows its
# initial state; the next cell answers the second question without it.)

# %%
explorer, explorer_state = savings_explorer(TABLE6, TABLE6_SCRATCH)
display(explorer)

# %%
slow_preparation = TABLE6[0].on_cluster(tflops_per_device=TABLE6[1].tflops_per_device)
slow = savings([slow_preparation, *TABLE6[1:]], TABLE6_SCRATCH)
print(f"preparation at {slow_preparation.tflops_per_device:g} TFLOP/s per device: "
      f"{slow_preparation.tokens_per_day_b:.1f} B tokens/day, {slow_preparation.days:.1f} days "
      f"(paper: {TABLE6[0].days:.1f})")
print(f"time savings x{slow[0]:.2f} (paper x{time_factor:.2f}), compute savings x{slow[1]:.2f} (paper x{compute_factor:.2f})")

# %% [markdown]
# The slower devices make the preparation take about four times longer, so the time savings fall; but
# the compute it spends (days × the cluster's rate) is the same, so the compute savings do not move.
# Compute savings are the fairer comparison across clusters for that reason.

# %% [markdown]
# The same question without sliders: the time factor as a function of the scale-out phase's tokens,
# everything else at the paper's values.

# %%
import dataclasses

budgets = [100, 200, 300, 545, 800, 1200, 1800, 2700]
curve = [savings([*TABLE6[:2], dataclasses.replace(TABLE6[2], tokens_b=b)], TABLE6_SCRATCH)
         for b in budgets]
fig = go.Figure([go.Scatter(x=budgets, y=[c[0] for c in curve], name="time savings", mode="lines+markers"),
                 go.Scatter(x=budgets, y=[c[1] for c in curve], name="compute savings", mode="lines+markers")])
fig.add_vline(x=545, line_dash="dash", annotation_text="paper: 545 B")
fig.update_xaxes(title="scale-out tokens (B)")
fig.update_yaxes(title="factor vs from scratch")
finish(fig, "Savings shrink as the expensive MoE phase gets more tokens")

# %% [markdown]
# ## Exercises
#
# 1. Add a shared expert to the MoE of section 1 (`shared_expert_ffn_dim=256`): how much does the
#    FLOPs per token grow, and the total parameters?
# 2. At which sequence length does attention cost as much as the matmuls ($12LHQT = 6N$) for the
#    grown 6×256 model? For a 7B model (32 layers, 32 heads of 128, $N \approx 6.5\cdot10^9$)?
# 3. With the sliders: find the scale-out token count at which the time savings drop to ×2.
#    Check your answer with `savings` directly.
# 4. The scratch run and the scale-out phase use the same cluster and the same model. Show from the
#    formulas that the compute factor would equal the time factor if every phase ran on that cluster.
# 5. Measure the MoE's tokens/s live as in section 2. Is its MFU lower than the dense model's? Why
#    might routing and small expert matmuls waste peak?
