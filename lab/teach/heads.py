"""Query heads, kv groups, and why a q head must stay in its group (AquilaMoE 2.2.1, "GQA compatibility").

In grouped-query attention (Hugging Face layout) q head h reads kv head h // (n_heads / n_kv_heads):
the q heads of a group are consecutive. A q head was trained against its group's keys and values; put
its weights where another group's kv head answers and it computes something else. MHA growth (bert2BERT)
maps heads globally, g(i) = i mod H, which in a GQA model moves copies into other groups: that is why
plain AKI does not fit GQA, and why AKI-Pro grows q heads inside each group (`lab.growth.grouped_map`).

Invariant: `permute_q_heads` with a permutation that keeps every head in its group computes exactly
what the model computes (a reordering of the sum over heads); one that moves heads across groups does not.
"""

from __future__ import annotations

import copy

import torch

from lab.growth.maps import GrowthMap, growth_map


def kv_group(n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """(n_heads,): the kv head each q head reads."""
    return torch.arange(n_heads) // (n_heads // n_kv_heads)


def groups_after_growth(m: GrowthMap, n_heads: int, n_kv_heads: int, new_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(group its source head was trained with, group it reads now) for each head of the grown model."""
    return kv_group(n_heads, n_kv_heads)[m.index], kv_group(new_heads, n_kv_heads)


def global_head_map(n_heads: int, new_heads: int) -> GrowthMap:
    """The MHA way (bert2BERT): new head i copies head i mod n_heads, ignoring the groups."""
    return growth_map(n_heads, new_heads, "cyclic")


@torch.no_grad()
def permute_q_heads(model, order: list[int] | torch.Tensor):
    """A copy of `model` whose q head h (every layer) holds the weights of q head `order[h]`: its q_proj
    rows (and bias) and o_proj columns. k and v are untouched, so head h reads kv head h's group."""
    out = copy.deepcopy(model)
    order = torch.as_tensor(order)
    hd = model.config.head_dim
    rows = (order[:, None] * hd + torch.arange(hd)).flatten()
    for block in out.layers:
        attn = block.attn
        attn.q_proj.weight.copy_(attn.q_proj.weight[rows])
        if attn.q_proj.bias is not None:
            attn.q_proj.bias.copy_(attn.q_proj.bias[rows])
        attn.o_proj.weight.copy_(attn.o_proj.weight[:, rows])
    return out
