"""The Mixture-of-Experts layer: router, stacked experts, dispatch, combine, auxiliary losses.

Shapes (a local tensor's name ends with them, as in torchtitan: `logits_NE`, `w_gate_EFD`):
    N tokens (batch x sequence, flattened), D model dim, E experts, F expert intermediate size,
    K top_k (experts per token), L MoE layers.

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

`ModelConfig.balance` says how the load is kept even. "aux_loss" (the default) adds `aux_loss_coef x`
the load-balancing loss to the training loss. "aux_free" (DeepSeek-V3, arXiv 2412.19437, 2.1.2; Wang et
al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts", arXiv 2408.15664) adds
a per-expert bias b_e to the router's probabilities for choosing the top_k only; the combine weights
are the unbiased probabilities, so the bias decides which experts run, never how much they count, and
no gradient reaches it. After each optimizer step b_e moves by `balance_bias_rate x sign(mean load -
load_e)` (`expert_bias_change`, applied by `lab.train.balance`): no loss term competes with the
language-modelling gradient. "none" does neither. Under all three the load-balancing loss is still
computed and reported (a measure of balance), and the z-loss is added as configured. The bias is added
to the probabilities after the softmax, as torchtitan does (DeepSeek-V3 adds it to sigmoid affinities).

Under expert parallelism (`lab.expert_parallel`) each process holds E / R of the stacked experts and the
layer exchanges token rows with the other processes of its group (all-to-all); the load-balancing loss
then counts f_e over every process's tokens, so it is the unsharded model's (see that module).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lab import fast_linear
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
    weights: torch.Tensor  # (N, K) fp32, the combine weights of the chosen experts
    experts: torch.Tensor  # (N, K) int64, the chosen experts


def route(x: torch.Tensor, router_weight: torch.Tensor, top_k: int, routing: str,
          expert_bias: torch.Tensor | None = None) -> Routing:
    """Choose top_k experts per token of x (N, D) and their combine weights, all in fp32.

    `expert_bias` (E,), aux-loss-free balancing's, is added to the probabilities only to choose the
    experts; the weights are the chosen experts' unbiased probabilities. Invariant: a zero bias chooses
    and weighs exactly as no bias (probs + 0 is probs, bit for bit).
    """
    x_ND, router_ED = x, router_weight
    logits_NE = F.linear(x_ND.float(), router_ED.float())
    probs_NE = logits_NE.softmax(dim=-1)
    if expert_bias is None:
        weights_NK, experts_NK = probs_NE.topk(top_k, dim=-1)
    else:
        experts_NK = (probs_NE + expert_bias.float()).topk(top_k, dim=-1).indices
        weights_NK = probs_NE.gather(-1, experts_NK)
    if routing == "topk_softmax":
        weights_NK = weights_NK / weights_NK.sum(dim=-1, keepdim=True)
    return Routing(logits_NE, probs_NE, weights_NK, experts_NK)


def load_balancing_loss(probs: torch.Tensor, tokens_per_expert: torch.Tensor) -> torch.Tensor:
    """E * sum_e f_e * P_e: 1 when the assignments and the probabilities are both uniform.

    probs (N, E); tokens_per_expert (E,) counts the N * top_k assignments. Gradients flow through P
    only (f counts discrete choices), as in Switch Transformers.
    """
    probs_NE, counts_E = probs, tokens_per_expert
    fraction_E = counts_E.float() / counts_E.sum()  # f_e
    return probs_NE.shape[-1] * (fraction_E * probs_NE.mean(dim=0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """mean over tokens of logsumexp(z)^2: keeps router logits small (ST-MoE)."""
    logits_NE = logits
    return torch.logsumexp(logits_NE, dim=-1).pow(2).mean()


def expert_bias_change(tokens_per_expert: torch.Tensor, rate: float) -> torch.Tensor:
    """The aux-free bias update of one step: rate * sign(mean load - load_e), per layer (DeepSeek-V3 2.1.2).

    tokens_per_expert (..., E) counts one step's assignments (all its micro-batches, all processes); the
    result has its shape. An overloaded expert's bias falls by `rate`, an underloaded one's rises by
    `rate`, one at exactly the mean load keeps its bias. Megatron-Core's rule; torchtitan also subtracts
    the change's mean, which moves every expert's score alike and so chooses the same experts.
    """
    load_LE = tokens_per_expert.float()
    return rate * torch.sign(load_LE.mean(dim=-1, keepdim=True) - load_LE)


def aggregate_layer_losses(per_layer: list[torch.Tensor], aggregation: str) -> torch.Tensor:
    """One scalar from the MoE layers' scalars: their "sum" or their "mean" (see the module docstring)."""
    stacked = torch.stack(per_layer)
    if aggregation == "sum":
        return stacked.sum()
    if aggregation == "mean":
        return stacked.mean()
    raise ValueError(f"router_loss_aggregation={aggregation!r}: must be 'sum' or 'mean'")


def router_entropy(probs: torch.Tensor) -> torch.Tensor:
    probs_NE = probs
    return -(probs_NE * probs_NE.clamp_min(1e-20).log()).sum(dim=-1).mean()


def _grouped_mm_supported(x: torch.Tensor, w: torch.Tensor) -> bool:
    # The kernel wants rows whose strides are multiples of 16 bytes and a build that has it.
    if not hasattr(torch, "_grouped_mm") or x.dtype != w.dtype:
        return False
    # CUDA's kernel is bf16 only, and so is the shape function torch.compile traces with on any device.
    if (x.device.type == "cuda" or torch.compiler.is_compiling()) and x.dtype != torch.bfloat16:
        return False
    return all((n * x.element_size()) % 16 == 0 for n in (x.shape[-1], w.shape[-2]))


def expert_kernel(x: torch.Tensor, w: torch.Tensor, kernel: str = "auto") -> str:
    """The kernel `grouped_linear` runs for rows x and stacked weights w: "grouped_mm" or "loop".

    "auto" takes the grouped matmul where supported, else the loop; "grouped_mm" and "loop" force one.
    On the CPU in fp32 "auto" takes the loop through oneDNN (`lab.fast_linear`) where the experts'
    products are large enough for it (`fast_linear.grouped_uses_onednn`: 0.73x the grouped matmul's time
    at the model benchmark's sizes on two threads), on groups padded to `fast_linear.ROW_BUCKET` rows
    (`expert_mlps`); there the loop's read of the counts on the host costs nothing.
    """
    if kernel == "auto":
        if fast_linear.grouped_uses_onednn(x, w):
            return "loop"
        return "grouped_mm" if _grouped_mm_supported(x, w) else "loop"
    return kernel


def grouped_linear(x: torch.Tensor, w: torch.Tensor, counts: torch.Tensor, counts_list: list[int] | None = None,
                   kernel: str = "auto") -> torch.Tensor:
    """Rows of x (N, I) sorted by expert, counts[e] of them for expert e; returns x_e @ w[e].T (N, O).

    (Here N counts the rows given, I and O are the input and output sizes: D and F, or F and D.)

    w is stacked (E, O, I), the layout of nn.Linear per expert. `kernel` as `expert_kernel` reads it
    ("grouped_mm" and "loop" are the dispatch ablation of `lab.bench.dispatch`); both compute the same
    product. Only the loop reads the counts on the host (`counts_list`, else `counts.tolist()`): on a GPU
    that read waits for every kernel queued before it, so the grouped matmul path makes none.
    """
    x_NI, w_EOI, counts_E = x, w, counts
    if expert_kernel(x_NI, w_EOI, kernel) == "grouped_mm":
        offsets_E = torch.cumsum(counts_E, dim=0, dtype=torch.int32)
        return torch._grouped_mm(x_NI, w_EOI.transpose(-2, -1), offs=offsets_E)
    # The same computation as a loop over the contiguous slices of each expert (M rows for expert e).
    return fast_linear.grouped_linear(x_NI, w_EOI, counts_E.tolist() if counts_list is None else counts_list)


def sort_by_expert(experts: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The N * K assignments of `experts` (N, K) in expert order: (order, token, counts).

    order (NK,) lists the flattened assignments sorted by expert (stable: a token's assignments keep the
    order of its top_k), token (NK,) the token each sorted assignment belongs to, counts (E,) how many
    went to each expert. Expert e's rows are the contiguous slice counts[:e].sum() .. counts[:e+1].sum().
    """
    experts_NK = experts
    K = experts_NK.shape[1]
    flat_experts_NK = experts_NK.flatten()
    order_NK = torch.argsort(flat_experts_NK, stable=True)
    return order_NK, order_NK // K, expert_counts(flat_experts_NK, n_experts)


def expert_counts(experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """How many of the assignments `experts` (any shape, expert ids) went to each expert: (E,) int64.

    `torch.bincount(experts.flatten(), minlength=E)`'s counts without its costs on the GPU path: on CUDA
    bincount reads its input's min and max on the host to size its output (two syncs), and under
    torch.compile that data-dependent size breaks the graph. A scatter-add into E slots has a fixed shape.
    """
    flat = experts.flatten()
    return torch.zeros(n_experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))


def expert_mlps(x: torch.Tensor, counts: torch.Tensor, w_gate, w_up, w_down, kernel: str = "auto") -> torch.Tensor:
    """Each expert's SwiGLU MLP on its rows: x (M, D) sorted by expert, counts[e] rows for expert e.

    w_gate and w_up (E, F, D), w_down (E, D, F) (E: the experts these rows are sorted over); returns
    (M, D), row for row.
    """
    x_MD, counts_E = x, counts
    # Under autocast the experts compute in its dtype, as F.linear would: with fp32 master weights (one GPU,
    # bf16 autocast) the rows and weights are fp32, and CUDA's grouped matmul runs in bf16 only.
    if torch.is_autocast_enabled(x_MD.device.type):
        dtype = torch.get_autocast_dtype(x_MD.device.type)
        x_MD, w_gate, w_up, w_down = (t.to(dtype) for t in (x_MD, w_gate, w_up, w_down))
    kernel = expert_kernel(x_MD, w_gate, kernel)  # the same for the three projections (same sizes, same dtype)
    counts_list = counts_E.tolist() if kernel == "loop" else None  # a host sync: the loop's split sizes only
    if kernel == "loop" and fast_linear.grouped_uses_onednn(x_MD, w_gate):
        return _bucketed_expert_mlps(x_MD, counts_list, w_gate, w_up, w_down)
    gate_MF = grouped_linear(x_MD, w_gate, counts_E, counts_list, kernel)
    h_MF = F.silu(gate_MF) * grouped_linear(x_MD, w_up, counts_E, counts_list, kernel)
    return grouped_linear(h_MF, w_down, counts_E, counts_list, kernel)


def _bucketed_expert_mlps(x: torch.Tensor, counts_list: list[int], w_gate, w_up, w_down) -> torch.Tensor:
    """`expert_mlps` through oneDNN on groups padded with zero rows to a multiple of
    `fast_linear.ROW_BUCKET` rows (`fast_linear.bucketed`): the same products, and the same weight
    gradients (the zero rows add nothing to them), on shapes that oneDNN has built before."""
    x_MD = x
    sizes, positions_M = fast_linear.bucketed(counts_list, x_MD.device)
    x_PD = x_MD.new_zeros(sum(sizes), x_MD.shape[1]).index_copy(0, positions_M, x_MD)
    gate_PF = fast_linear.onednn_grouped_linear(x_PD, w_gate, sizes)
    h_PF = F.silu(gate_PF) * fast_linear.onednn_grouped_linear(x_PD, w_up, sizes)
    return fast_linear.onednn_grouped_linear(h_PF, w_down, sizes).index_select(0, positions_M)


def combine(y: torch.Tensor, weights: torch.Tensor, order: torch.Tensor, token: torch.Tensor,
            x: torch.Tensor) -> torch.Tensor:
    """The layer's output (N, D): each sorted assignment's expert output y (NK, D), times its routing
    weight, added to its token's row (`order` and `token` as `sort_by_expert` gives them; x (N, D) for
    the shape and dtype)."""
    y_NKD, weights_NK, order_NK, token_NK = y, weights, order, token
    # Weighted in x's dtype, as `reference_experts` does: under bf16 autocast on fp32 master weights the
    # experts give bf16 rows and x is fp32, and index_add_ wants one dtype.
    y_NKD = y_NKD * weights_NK.flatten()[order_NK].unsqueeze(-1).to(x.dtype)
    return torch.zeros_like(x).index_add_(0, token_NK, y_NKD)


def grouped_experts(x, weights, experts, w_gate, w_up, w_down, kernel: str = "auto") -> torch.Tensor:
    """Sort the N * K assignments by expert, run each expert on its slice, scatter back weighted.

    x (N, D), weights and experts (N, K), w_gate and w_up (E, F, D), w_down (E, D, F); returns (N, D).
    Below, NK indexes the N * K assignments sorted by expert.
    """
    x_ND = x
    order_NK, token_NK, counts_E = sort_by_expert(experts, w_gate.shape[0])
    # Grouped by expert. index_select rather than x_ND[token_NK]: the same rows, and a backward (index_add)
    # ten times faster on the CPU than indexing's (index_put with accumulation).
    x_NKD = x_ND.index_select(0, token_NK)
    y_NKD = expert_mlps(x_NKD, counts_E, w_gate, w_up, w_down, kernel)
    return combine(y_NKD, weights, order_NK, token_NK, x_ND)


def reference_experts(x, weights, experts, w_gate, w_up, w_down) -> torch.Tensor:
    """The readable version: for each expert, gather its tokens, run its MLP, add the weighted result.

    Shapes as `grouped_experts`; below, M counts the tokens that chose expert e.
    """
    x_ND, weights_NK, experts_NK = x, weights, experts
    w_gate_EFD, w_up_EFD, w_down_EDF = w_gate, w_up, w_down
    out_ND = torch.zeros_like(x_ND)
    for e in range(w_gate_EFD.shape[0]):
        token_M, slot_M = torch.where(experts_NK == e)
        if token_M.numel() == 0:
            continue
        x_MD = x_ND[token_M]
        h_MF = F.silu(F.linear(x_MD, w_gate_EFD[e])) * F.linear(x_MD, w_up_EFD[e])
        y_MD = F.linear(h_MF, w_down_EDF[e]) * weights_NK[token_M, slot_M].unsqueeze(-1).to(x_ND.dtype)
        out_ND = out_ND.index_add(0, token_M, y_MD)
    return out_ND


class MoE(nn.Module):
    """Top-k routed experts (plus an optional always-on shared expert gated by a sigmoid, as Qwen2-MoE).

    Invariant: with topk_softmax routing, experts that are identical copies of a SwiGLU MLP make the
    layer equal to that MLP for any router (sparse upcycling, Komatsuzaki et al. 2023).

    With `balance="aux_free"` the layer holds `expert_bias` (E,), a persistent buffer: saved and loaded
    with the model (exact resume), never a parameter (no gradient, no optimizer state). A state without
    it (an upcycled model, a checkpoint trained under another balance) loads as a zero bias, the
    correction DeepSeek-V3 starts from. Under the other balances `expert_bias` is None.
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
        # fp32 zeros at first; it then follows the model's dtype (training keeps fp32 master weights).
        self.register_buffer("expert_bias", torch.zeros(E) if cfg.balance == "aux_free" else None, persistent=True)
        # Set by `lab.expert_parallel.distribute_experts` under expert parallelism: this process then holds
        # E / R of the experts and exchanges tokens with the others. None: every expert is here.
        self.expert_shard = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "expert_bias"
        if self.expert_bias is not None and key not in state_dict:
            # No bias stored: start from no correction, on the device the state's router weight is on.
            where = state_dict.get(prefix + "router.weight", self.expert_bias)
            state_dict[key] = torch.zeros(self.n_experts, dtype=self.expert_bias.dtype, device=where.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, MoEStats]:
        shape = x.shape
        x_ND = x.reshape(-1, shape[-1])
        r = route(x_ND, self.router.weight, self.top_k, self.routing, self.expert_bias)
        tokens_per_expert_E = expert_counts(r.experts, self.n_experts)
        balance_counts_E = tokens_per_expert_E
        if self.expert_shard is not None:
            y_ND = self.expert_shard.routed_experts(x_ND, r.weights, r.experts, self.w_gate, self.w_up, self.w_down)
            balance_counts_E = self.expert_shard.global_counts(tokens_per_expert_E)
        else:
            experts_fn = grouped_experts if self.dispatch == "grouped" else reference_experts
            y_ND = experts_fn(x_ND, r.weights, r.experts, self.w_gate, self.w_up, self.w_down)
        if self.shared_expert is not None:
            y_ND = y_ND + torch.sigmoid(self.shared_expert_gate(x_ND)) * self.shared_expert(x_ND)
        stats = MoEStats(
            load_balancing_loss=load_balancing_loss(r.probs, balance_counts_E),
            z_loss=router_z_loss(r.logits),
            tokens_per_expert=tokens_per_expert_E,
            router_entropy=router_entropy(r.probs.detach()),
        )
        return y_ND.view(shape), stats
