"""Virtual groups and weight scaling: fine-grained experts cut from one dense MLP (He et al. 2024).

A SwiGLU MLP is a sum over its intermediate units: MLP(x) = sum_j down[:, j] * silu(gate_j x) * up_j x.
Cut the ffn_dim units into G equal slices and MLP(x) = sum_s MLP_s(x), each slice a small MLP of
ffn_dim / G units. With granularity G, expert e is slice e % G, and experts g*G .. g*G + G - 1 form
virtual group g: together they are the whole dense MLP.

The router's rows are drawn once per group and repeated G times, so the G experts of a group have the
same logit and, when top_k is a multiple of G, are chosen together (topk's boundary falls between
groups, whatever it does with ties inside one). A chosen group with combine weight w then adds
w * MLP(x); scaling every expert's down projection by `expert_scale` makes the sum equal MLP(x):
- topk_softmax (weights renormalised to 1 over the k chosen experts, i.e. k/G groups of G equal
  weights): the groups' weights sum to 1/G, so s = G and the upcycled layer equals the dense one exactly;
- softmax_topk (no renormalisation): each chosen expert's probability is about 1/E at init (a router
  of small std), so the output is about (k / G) * (1 / E) * MLP(x), and s = E * G / k makes it close,
  not equal (He et al.'s weight scaling; Megatron's factor, with E the number of fine-grained experts).
"""

from __future__ import annotations

import torch

# Which dimension of each dense weight runs over the intermediate units.
INTERMEDIATE_DIM = {"w_gate": 0, "w_up": 0, "w_down": 1}


def expert_scale(routing: str, n_experts: int, granularity: int, top_k: int) -> float:
    """The factor on each expert's down projection that makes the upcycled MoE (close to) the dense MLP.

    G for topk_softmax (exact), E * G / k for softmax_topk (exact in expectation at a uniform router).
    """
    if routing == "topk_softmax":
        return float(granularity)
    return n_experts * granularity / top_k


def expert_slice(dense: torch.Tensor, which: str, expert: int, granularity: int) -> torch.Tensor:
    """Expert `expert`'s part of a dense MLP weight: slice `expert % granularity` of the intermediate units.

    `which` is "w_gate" or "w_up" (dense (ffn_dim, dim): rows) or "w_down" (dense (dim, ffn_dim): columns).
    """
    return dense.chunk(granularity, dim=INTERMEDIATE_DIM[which])[expert % granularity]


def group_rows(rows: torch.Tensor, granularity: int) -> torch.Tensor:
    """Router weights (E, dim) from one row per virtual group (E / G, dim): row g serves experts g*G .. g*G+G-1."""
    return rows.repeat_interleave(granularity, dim=0)
