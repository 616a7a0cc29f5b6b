"""Aux-loss-free load balancing, the training side: after each optimizer step, every MoE layer's expert
bias moves against its load error (DeepSeek-V3, arXiv 2412.19437, 2.1.2; Wang et al. 2024, arXiv
2408.15664). The routing side, where the bias only chooses the experts, is `lab.moe`.

Invariant: the update reads the step's token counts per expert and layer, summed over the step's
micro-batches and, in a sharded run, over processes (the caller reduces them), so every process applies
the same change and keeps the same bias. The bias is a buffer changed under no_grad: nothing of it
reaches a gradient or the optimizer.
"""

from __future__ import annotations

import torch

from lab.moe import MoE, expert_bias_change


def biased_layers(model) -> list[MoE]:
    """The MoE layers that hold an aux-free expert bias, in depth order (the order of their counts)."""
    return [m for m in model.modules() if isinstance(m, MoE) and m.expert_bias is not None]


@torch.no_grad()
def update_expert_biases(model, tokens_per_expert: torch.Tensor, rate: float) -> None:
    """b_e += rate * sign(mean load - load_e) in every MoE layer; tokens_per_expert is (L, E), one row per
    MoE layer. A model without expert biases (balance "aux_loss" or "none") is left as it is."""
    layers = biased_layers(model)
    if not layers:
        return
    change_LE = expert_bias_change(tokens_per_expert, rate)
    for moe, change_E in zip(layers, change_LE, strict=True):
        moe.expert_bias.add_(change_E.to(device=moe.expert_bias.device, dtype=moe.expert_bias.dtype))


def expert_biases(model) -> list[list[float]] | None:
    """Every MoE layer's expert bias as a list of floats (the metrics' `expert_bias`), or None without any."""
    layers = biased_layers(model)
    return [moe.expert_bias.detach().float().cpu().tolist() for moe in layers] if layers else None
