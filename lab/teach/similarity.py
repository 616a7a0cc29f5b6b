"""How alike the units of a model are: the measurement behind FPI's symmetry problem (bert2BERT 3.2).

A SwiGLU neuron j of a layer is everything that belongs to its intermediate index: row j of gate and
up, column j of down. FPI makes new neuron i a copy of old neuron g(i) (its down column halved, like the
original's); the copies compute equal values, receive equal gradients, and so stay equal under any
optimizer that treats equal inputs equally (SGD, Adam, weight decay): 2F neurons that can only ever be
worth F. AKI, symmetric noise and Drop-Upcycling (for experts) start the copies apart.

Invariant: `copy_similarity` of an FPI-grown layer is 1 for every new unit, before and after training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.growth.maps import GrowthMap


def mlp_units(model, layer: int) -> torch.Tensor:
    """(ffn_dim, 3 * dim) fp32: neuron j of a dense layer's MLP as [gate row j, up row j, down column j]."""
    mlp = model.layers[layer].mlp
    return torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight.T], dim=1).detach().float()


def expert_units(model, layer: int) -> torch.Tensor:
    """(n_experts, 3 * moe_ffn_dim * dim) fp32: each expert of an MoE layer as one flat vector."""
    moe = model.layers[layer].mlp
    return torch.cat([moe.w_gate.flatten(1), moe.w_up.flatten(1), moe.w_down.flatten(1)], dim=1).detach().float()


def cosine_matrix(units: torch.Tensor) -> torch.Tensor:
    """(n, n) cosine similarity between the rows of `units` (n, d)."""
    u = F.normalize(units.float(), dim=1)
    return u @ u.T


def copy_similarity(units: torch.Tensor, m: GrowthMap) -> torch.Tensor:
    """Cosine similarity of each new unit (is_new) with the unit it was grown from, g(i): (n_new,)."""
    new = m.is_new.nonzero().flatten()
    return F.cosine_similarity(units[new].float(), units[m.index[new]].float(), dim=1)


def effective_rank(units: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values of `units` (Roy and Vetterli 2007): how many
    directions the layer's units really span, with near-copies counting for little. Exact copies add
    nothing; copies set apart by a small noise add a little, not a whole unit each."""
    s = torch.linalg.svdvals(units.float())
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def distinct_units(units: torch.Tensor, tol: float = 1e-5) -> int:
    """How many units point in a direction no earlier unit points in (cosine similarity below 1 - tol):
    what the layer can actually represent, whatever its nominal width."""
    sim = cosine_matrix(units).tril(diagonal=-1)
    return int((sim.max(dim=1).values < 1 - tol).sum().item())
