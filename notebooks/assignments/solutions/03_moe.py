# %% [markdown]
# # Assignment 3: A top-k router, its auxiliary losses, and sparse upcycling
#
# Scale-Out turns a dense model into a Mixture of Experts (MoE): every MLP becomes $E$ experts and a
# **router** sends each token to $k$ of them (AquilaMoE section 2.2.2: $E = 8$, $k = 2$). For a token
# $x \in \mathbb{R}^D$ the router computes logits $z = W_r x \in \mathbb{R}^E$ and probabilities
# $p = \mathrm{softmax}(z)$, picks the $k$ experts of largest $p$, and renormalises their weights to
# sum to 1 (Mixtral's "top-k then softmax"). The layer's output is
# $y = \sum_{e \in \mathrm{top}k} w_e\, \mathrm{MLP}_e(x)$.
#
# Two auxiliary losses keep the router healthy (AquilaMoE trains with coefficients 0.001 and 0.01):
#
# - **load balancing** (Switch Transformers): $\mathcal{L}_{aux} = E \sum_e f_e P_e$, with $f_e$ the
#   fraction of the $N k$ assignments of a batch of $N$ tokens that went to expert $e$ and $P_e$ the
#   mean over tokens of $p_e$. It is 1 when both are uniform, and larger when the router favours
#   some experts.
# - **router z-loss** (ST-MoE): $\mathcal{L}_z = \frac{1}{N} \sum_t \left(\log \sum_e e^{z_{te}}\right)^2$,
#   which keeps the logits small and the softmax numerically safe.
#
# **Sparse upcycling** (Komatsuzaki et al. 2023) starts every expert as a copy of the trained dense
# MLP. Since the chosen weights sum to 1, the MoE then computes exactly the dense MLP whatever the
# router does, and training makes the experts diverge.
#
# **How this file is graded.** `python -m lab grade 03_moe.py` imports this file and calls your
# functions. Cells under `if __name__ == "__main__":` are experiments for you: they run in Jupyter
# (or `python 03_moe.py`) and the grader skips them. Replace every `raise NotImplementedError`.

# %%
# assignment: 03_moe
import torch
import torch.nn.functional as F

from lab.mlp import MLP
from lab.model import DecoderLM


# %% [markdown]
# ## Q1 (3 points): the top-k router
# `x` is (N, D) and `router_weight` (E, D). Return `(weights, experts)`, both (N, k): the indices of
# the k most probable experts of each token, most probable first, and their probabilities renormalised
# to sum to 1 per token. Compute in float32 (`x.float()`), as routers do in mixed precision.

# %%
def route(x: torch.Tensor, router_weight: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights (N, k) float32 summing to 1 per token, experts (N, k) int64) of top-k routing."""
    probs = F.linear(x.float(), router_weight.float()).softmax(dim=-1)  # (N, E)
    weights, experts = probs.topk(top_k, dim=-1)
    return weights / weights.sum(dim=-1, keepdim=True), experts


# %% [markdown]
# ## Q2 (3 points): the load-balancing loss
# `probs` is (N, E), the router's softmax for every token; `experts` (N, k) the chosen experts.
# Return the scalar $E \sum_e f_e P_e$. Hint: `torch.bincount(..., minlength=E)` counts assignments.

# %%
def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """E * sum_e f_e * P_e: 1 when assignments and probabilities are uniform; a scalar tensor."""
    n_experts = probs.shape[-1]
    counts = torch.bincount(experts.flatten(), minlength=n_experts)  # (E,)
    fraction = counts.float() / counts.sum()  # f_e
    return n_experts * (fraction * probs.mean(dim=0)).sum()


# %% [markdown]
# ## Q3 (2 points): the router z-loss
# `logits` is (N, E). Use `torch.logsumexp`, which does not overflow for large logits.

# %%
def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """mean over tokens of (logsumexp_e z)^2; a scalar tensor."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


# %% [markdown]
# ## Q4 (4 points): the MoE layer's forward pass
# Experts are stacked: `w_gate` and `w_up` are (E, F, D), `w_down` is (E, D, F); expert $e$ computes
# $\mathrm{MLP}_e(x) = W^{down}_e (\mathrm{silu}(W^{gate}_e x) \odot W^{up}_e x)$. Route every token with
# your `route`, run each expert on the tokens sent to it (loop over experts; `torch.where(experts == e)`
# gives the tokens and their slots), and add the weighted outputs. `x` is (N, D); return (N, D).

# %%
def moe_forward(x: torch.Tensor, router_weight: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                w_down: torch.Tensor, top_k: int) -> torch.Tensor:
    """sum over each token's top-k experts of weight * expert(x); (N, D)."""
    weights, experts = route(x, router_weight, top_k)
    out = torch.zeros_like(x)
    for e in range(w_gate.shape[0]):
        token, slot = torch.where(experts == e)
        if token.numel() == 0:
            continue
        h = F.silu(x[token] @ w_gate[e].T) * (x[token] @ w_up[e].T)
        out = out.index_add(0, token, (h @ w_down[e].T) * weights[token, slot].unsqueeze(-1).to(x.dtype))
    return out


# %% [markdown]
# ## Q5 (2 points): upcycle a dense MLP
# Return `(w_gate, w_up, w_down)` stacked for `n_experts` experts, each expert a copy of `mlp`
# (`mlp.gate_proj.weight` is (F, D), `mlp.down_proj.weight` is (D, F)). The copies must be real copies
# (training one expert must not change the others). Invariant: with any router, `moe_forward` of the
# upcycled experts equals `mlp(x)`.

# %%
@torch.no_grad()
def upcycle_mlp(mlp: MLP, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stacked expert weights (E, F, D), (E, F, D), (E, D, F), every expert a copy of the dense MLP."""
    return tuple(layer.weight.detach().unsqueeze(0).repeat(n_experts, 1, 1)
                 for layer in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))


# %% [markdown]
# ## Q6 (2 points): expert load of an upcycled model
# The lab's `DecoderLM` reports, for a batch, `model(ids).tokens_per_expert`: a tensor (n_moe_layers, E)
# counting the assignments of each expert in each MoE layer. Return the **fraction** of each layer's
# assignments that each expert received, float32 of the same shape (every row sums to 1). Evaluate
# without gradients.

# %%
@torch.no_grad()
def expert_load(model: DecoderLM, ids: torch.Tensor) -> torch.Tensor:
    """(n_moe_layers, E) fraction of each MoE layer's token assignments that went to each expert."""
    counts = model(ids).tokens_per_expert.float()
    return counts / counts.sum(dim=-1, keepdim=True)


# %% [markdown]
# ## Q7 (1 point): how unbalanced?
# Summarise a load (a row of fractions, or several rows) by its **imbalance**, the largest fraction
# times $E$: 1 for a perfectly balanced layer, $E / k$ when the same $k$ experts take every token.
# Return one float per row as a tensor of shape `load.shape[:-1]`.

# %%
def imbalance(load: torch.Tensor) -> torch.Tensor:
    """max_e load_e * E for every row of `load` (..., E): 1 when balanced."""
    return load.max(dim=-1).values * load.shape[-1]


# %% [markdown]
# ## Experiments (not graded)
# Upcycle a tiny trained model with the lab (`lab.derive.upcycle_model`, 8 experts, top-2), check that
# it computes the dense model's logits, train it a few steps with and without the load-balancing loss,
# and compare the expert load of each layer. Which experts take most tokens right after upcycling, and
# why is the load not uniform even though the experts are identical?

# %%
if __name__ == "__main__":
    from lab.config import ModelConfig
    from lab.upcycle import UpcyclePlan
    from lab.derive import upcycle_model

    torch.manual_seed(0)
    dense = DecoderLM(ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)).eval()
    ids = torch.randint(0, 256, (4, 32))
    for aux in (0.0, 0.01):
        moe = upcycle_model(dense, UpcyclePlan(n_experts=8, top_k=2, aux_loss_coef=aux))
        with torch.no_grad():
            gap = (moe.eval()(ids).logits - dense(ids).logits).abs().max()
        print(f"aux {aux}: logit gap after upcycling {gap:.2e}, imbalance {imbalance(expert_load(moe, ids)).tolist()}")
        optimizer = torch.optim.AdamW(moe.train().parameters(), lr=3e-3)
        for step in range(30):
            loss = moe(ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        print(f"  after 30 steps: loss {loss.item():.3f}, imbalance {imbalance(expert_load(moe.eval(), ids)).tolist()}")
