"""Shared-expert upcycling: N always-on shared experts and E routed fine-grained experts from one dense MLP.

DeepSeekMoE (Dai et al. 2024, arXiv 2401.06066) pairs fine-grained experts with a few shared experts
that every token passes through ("shared expert isolation"); Qwen1.5-MoE and Qwen2-MoE (Qwen team
2024) carry the shared experts as one MLP whose output is gated per token by a sigmoid:
y = routed(x) + sigmoid(w_g x) * shared(x). Qwen2-MoE has a single shared MLP, so N shared experts of
one shard each are that MLP with N shards' width (Qwen1.5-MoE-A2.7B's shared_expert_intermediate_size
5632 is 4 x its moe_intermediate_size 1408); the lab's `lab.moe.MoE` computes the same.

Construction (granularity G, N shared experts, 0 < N < G). The dense SwiGLU MLP is a sum over its
intermediate units, so cut into G equal shards along that dimension it is the sum of G small MLPs
(`lab.upcycle.granularity`):
- the shared expert is shards 0 .. N-1, concatenated (N * ffn_dim / G units), its down projection
  multiplied by 2, and its gate weight zero: sigmoid(0) = 1/2 for every token, so the gated shared
  expert is exactly shards 0 .. N-1 of the dense MLP (x2 and x1/2 are exact in binary floating point);
- routed expert e is shard N + e % (G - N): the G - N remaining shards form a virtual group
  (He et al. 2024, arXiv 2410.07524), groups have one router row repeated G - N times, and top_k must
  be a multiple of G - N so that a group fires whole; the down projections are scaled by the group
  size G - N (topk_softmax) or E * (G - N) / k (softmax_topk), the rule of `expert_scale` with the
  group in place of G.

Invariant: with topk_softmax routing (and no Drop-Upcycling or noise) the upcycled layer equals the dense
MLP for any router: the shared expert gives shards 0 .. N-1 bit for bit, and the chosen groups, each
summing to shards N .. G-1, have combine weights that sum to 1 / (G - N). The equality is exact in real
arithmetic; in floating point the dense layer's single sum over units becomes two sums added, so the
two agree to rounding, not bit for bit. With softmax_topk the shared part is still exact and the routed
part is only close (He et al.'s weight scaling, exact in expectation at a uniform router).

N = 0 is plain fine-grained upcycling: no shared expert, groups of G.
"""

from __future__ import annotations

import torch

from lab.upcycle.granularity import INTERMEDIATE_DIM

# 1 / sigmoid(0): the factor on the shared expert's down projection that undoes its gate at init.
SHARED_DOWN_SCALE = 2.0


def routed_group_size(granularity: int, shared_experts: int) -> int:
    """How many routed experts make one virtual group: the G - N shards left once N are shared."""
    return granularity - shared_experts


def routed_shard(expert: int, granularity: int, shared_experts: int) -> int:
    """The dense-MLP shard that routed expert `expert` is a copy of: N + expert % (G - N)."""
    return shared_experts + expert % routed_group_size(granularity, shared_experts)


def shared_expert_ffn_dim(ffn_dim: int, granularity: int, shared_experts: int) -> int:
    """The shared MLP's width: N shards of ffn_dim / G units (0 when N = 0: no shared expert)."""
    return shared_experts * (ffn_dim // granularity)


def shared_expert_weight(dense: torch.Tensor, which: str, granularity: int, shared_experts: int) -> torch.Tensor:
    """The shared expert's weight: shards 0 .. N-1 of a dense MLP weight, down projection x 2.

    `which` is "w_gate" or "w_up" (dense (ffn_dim, dim): the first rows) or "w_down" (dense (dim, ffn_dim):
    the first columns, doubled to undo sigmoid(0) = 1/2).
    """
    dim = INTERMEDIATE_DIM[which]
    width = shared_expert_ffn_dim(dense.shape[dim], granularity, shared_experts)
    weight = dense.narrow(dim, 0, width).clone()
    return weight * SHARED_DOWN_SCALE if which == "w_down" else weight


def shared_expert_gate_weight(dim: int) -> torch.Tensor:
    """The shared expert's gate (1, dim), zero: sigmoid(0 . x) = 1/2 for every token at init, and the
    gate still learns (its gradient is sigmoid'(0) * <shared(x), dL/dy> x, not zero)."""
    return torch.zeros(1, dim)
