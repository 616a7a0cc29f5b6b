"""The Mixture-of-Experts layer: router, stacked experts, dispatch, combine, auxiliary losses.

Router: logits z = W_r x in fp32 (E, D); probabilities p = softmax(z); each token picks its top_k
experts. With routing "topk_softmax" (Mixtral) the chosen weights are renormalised to sum to 1, so an
MoE whose experts are identical copies of a dense MLP computes exactly that MLP (sparse upcycling's
invariant). With "softmax_topk" (Qwen2-MoE, norm_topk_prob=False) they are not renormalised.

Experts are stacked weights w_gate, w_up (E, F, D) and w_down (E, D, F). The "grouped" dispatch sorts
the T * top_k assignments by expert and runs one grouped matmul per projection (`torch._grouped_mm`
where the build supports it, else a loop over the contiguous slices); the "reference" dispatch is a
plain loop over experts, kept as the readable version and tested equal to the grouped one.

The auxiliary losses are returned (never stored in globals):
- load balancing, normalised so that perfect balance gives 1: `E * sum_e f_e * P_e`, with f_e the
  fraction of the T * top_k assignments that went to expert e and P_e the mean probability of e
  (Switch Transformers, Fedus et al. 2021; Hugging Face's variant has its minimum at top_k instead);
- router z-loss: `mean_t (logsumexp_e z_te)^2` (ST-MoE, Zoph et al. 2022).

Each layer reports its own pair; `aggregate_layer_losses` makes one value of each for the model, as
`ModelConfig.router_loss_aggregation` says:
- "sum" (Megatron-Core's convention): every MoE layer's router adds `coef * its loss` to the gradient
  on its own (`MoEAuxLossAutoScaler`, `--moe-aux-loss-coeff`, `--moe-z-loss-coeff`), so the training
  loss holds the sum over layers. AquilaMoE (BAAI 2024, arXiv 2408.06567) trained in Megatron
  (FlagScale) with coefficients 0.001 and 0.01, so its recipes here use "sum"; a perfectly balanced
  model then logs a load-balancing loss of n_moe_layers.
- "mean" (the lab's default, and what every config written before the setting existed means): the
  average over layers, 1 at perfect balance whatever the depth, but a model of n MoE layers feels
  1/n of the pressure that "sum" gives at the same coefficients.
Either way sum = n_moe_layers x mean: only the scale of the two losses and of their gradients changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lab.config import ModelConfig
from lab.mlp import MLP


@dataclass
class MoEStats:
    """What one MoE layer reports besides its output."""

    load_balancing_loss: torch.Tensor  # scalar, 1 at perfect balance
    z_loss: torch.Tensor  # scalar
    tokens_per_expert: torch.Tensor  # (E,) int64, sums to T * top_k
    router_entropy: torch.Tensor  # scalar, mean entropy (nats) of the router's distribution per token


@dataclass
class Routing:
    logits: torch.Tensor  # (N, E) fp32
    probs: torch.Tensor  # (N, E) fp32
    weights: torch.Tensor  # (N, k) fp32, the combine weights of the chosen experts
    experts: torch.Tensor  # (N, k) int64, the chosen experts


def route(x: torch.Tensor, router_weight: torch.Tensor, top_k: int, routing: str) -> Routing:
    """Choose top_k experts per token (N, D) and their combine weights, all in fp32."""
    logits = F.linear(x.float(), router_weight.float())  # (N, E)
    probs = logits.softmax(dim=-1)
    weights, experts = probs.topk(top_k, dim=-1)  # (N, k)
    if routing == "topk_softmax":
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return Routing(logits, probs, weights, experts)


def load_balancing_loss(probs: torch.Tensor, tokens_per_expert: torch.Tensor) -> torch.Tensor:
    """E * sum_e f_e * P_e: 1 when the assignments and the probabilities are both uniform.

    probs (N, E); tokens_per_expert (E,) counts the N * top_k assignments. Gradients flow through P
    only (f counts discrete choices), as in Switch Transformers.
    """
    fraction = tokens_per_expert.float() / tokens_per_expert.sum()  # f_e, (E,)
    return probs.shape[-1] * (fraction * probs.mean(dim=0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """mean over tokens of logsumexp(z)^2: keeps router logits small (ST-MoE)."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


def aggregate_layer_losses(per_layer: list[torch.Tensor], aggregation: str) -> torch.Tensor:
    """One scalar from the MoE layers' scalars: their "sum" or their "mean" (see the module docstring)."""
    stacked = torch.stack(per_layer)
    if aggregation == "sum":
        return stacked.sum()
    if aggregation == "mean":
        return stacked.mean()
    raise ValueError(f"router_loss_aggregation={aggregation!r}: must be 'sum' or 'mean'")


def router_entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-20).log()).sum(dim=-1).mean()


def _grouped_mm_supported(x: torch.Tensor, w: torch.Tensor) -> bool:
    # The kernel wants rows whose strides are multiples of 16 bytes and a build that has it.
    if not hasattr(torch, "_grouped_mm") or x.dtype != w.dtype:
        return False
    if x.device.type == "cuda" and x.dtype != torch.bfloat16:
        return False
    return all((n * x.element_size()) % 16 == 0 for n in (x.shape[-1], w.shape[-2]))


def grouped_linear(x: torch.Tensor, w: torch.Tensor, counts: torch.Tensor, counts_list: list[int],
                   kernel: str = "auto") -> torch.Tensor:
    """Rows of x (N, I) sorted by expert, counts[e] of them for expert e; returns x_e @ w[e].T (N, O).

    w is stacked (E, O, I), the layout of nn.Linear per expert. `kernel` "auto" takes the grouped
    matmul where supported, else the loop; "grouped_mm" and "loop" force one (the dispatch ablation of
    `lab.bench.dispatch`); both compute the same product.
    """
    if kernel == "grouped_mm" or (kernel == "auto" and _grouped_mm_supported(x, w)):
        offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
        return torch._grouped_mm(x, w.transpose(-2, -1), offs=offsets)
    # The same computation as a loop over the contiguous slices of each expert.
    chunks = x.split(counts_list)
    return torch.cat([F.linear(chunk, w[e]) for e, chunk in enumerate(chunks)])


def grouped_experts(x, weights, experts, w_gate, w_up, w_down, kernel: str = "auto") -> torch.Tensor:
    """Sort the N * k assignments by expert, run each expert on its slice, scatter back weighted."""
    N, k = experts.shape
    n_experts = w_gate.shape[0]
    flat = experts.flatten()  # (N*k,)
    order = torch.argsort(flat, stable=True)
    token = order // k  # which token each sorted assignment belongs to
    counts = torch.bincount(flat, minlength=n_experts)
    counts_list = counts.tolist()
    xs = x[token]  # (N*k, D), grouped by expert
    gate = grouped_linear(xs, w_gate, counts, counts_list, kernel)
    h = F.silu(gate) * grouped_linear(xs, w_up, counts, counts_list, kernel)
    ys = grouped_linear(h, w_down, counts, counts_list, kernel)  # (N*k, D)
    ys = ys * weights.flatten()[order].unsqueeze(-1).to(ys.dtype)
    return torch.zeros_like(x).index_add_(0, token, ys)


def reference_experts(x, weights, experts, w_gate, w_up, w_down) -> torch.Tensor:
    """The readable version: for each expert, gather its tokens, run its MLP, add the weighted result."""
    out = torch.zeros_like(x)
    for e in range(w_gate.shape[0]):
        token, slot = torch.where(experts == e)
        if token.numel() == 0:
            continue
        h = F.silu(F.linear(x[token], w_gate[e])) * F.linear(x[token], w_up[e])
        y = F.linear(h, w_down[e]) * weights[token, slot].unsqueeze(-1).to(x.dtype)
        out = out.index_add(0, token, y)
    return out


class MoE(nn.Module):
    """Top-k routed experts (plus an optional always-on shared expert gated by a sigmoid, as Qwen2-MoE).

    Invariant: with topk_softmax routing, experts that are identical copies of a SwiGLU MLP make the
    layer equal to that MLP for any router (sparse upcycling, Komatsuzaki et al. 2023).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, Fd, D = cfg.n_experts, cfg.moe_ffn_dim, cfg.dim
        self.n_experts, self.top_k, self.routing = E, cfg.top_k, cfg.routing
        self.dispatch = cfg.moe_dispatch
        self.router = nn.Linear(D, E, bias=False)
        self.w_gate = nn.Parameter(torch.empty(E, Fd, D))
        self.w_up = nn.Parameter(torch.empty(E, Fd, D))
        self.w_down = nn.Parameter(torch.empty(E, D, Fd))
        self.shared_expert = MLP(D, cfg.shared_expert_ffn_dim) if cfg.shared_expert_ffn_dim else None
        self.shared_expert_gate = nn.Linear(D, 1, bias=False) if cfg.shared_expert_ffn_dim else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, MoEStats]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, D)
        r = route(x, self.router.weight, self.top_k, self.routing)
        experts_fn = grouped_experts if self.dispatch == "grouped" else reference_experts
        y = experts_fn(x, r.weights, r.experts, self.w_gate, self.w_up, self.w_down)
        if self.shared_expert is not None:
            y = y + torch.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        tokens_per_expert = torch.bincount(r.experts.flatten(), minlength=self.n_experts)
        stats = MoEStats(
            load_balancing_loss=load_balancing_loss(r.probs, tokens_per_expert),
            z_loss=router_z_loss(r.logits),
            tokens_per_expert=tokens_per_expert,
            router_entropy=router_entropy(r.probs.detach()),
        )
        return y.view(shape), stats
