"""Where the router sends tokens: expert load per layer, per domain, measured on the validation text.

A training run's `metrics.jsonl` records tokens per expert over each step's batch, all domains mixed.
Which experts a domain uses (code against Chinese poems, say) needs a forward pass per domain; the
validation windows of `lab.teach.loop` are the same text at every call, so loads measured at different
steps compare.
"""

from __future__ import annotations

import torch

from lab.teach.loop import validation_windows


@torch.no_grad()
def expert_load(model, tokens: torch.Tensor) -> torch.Tensor:
    """(n_moe_layers, n_experts) fraction of the T * top_k assignments each expert got on `tokens` (n, T);
    each row sums to 1."""
    was_training = model.training
    counts = model.eval()(tokens).tokens_per_expert
    model.train(was_training)
    if counts is None:
        raise ValueError("the model has no MoE layer")
    counts = counts.float()
    return counts / counts.sum(dim=1, keepdim=True)


def expert_load_by_domain(model, seq_len: int = 64, n_per_domain: int = 4) -> dict[str, torch.Tensor]:
    """`expert_load` on each domain's validation windows: {domain: (n_moe_layers, n_experts)}."""
    return {domain: expert_load(model, ids) for domain, ids in validation_windows(seq_len, n_per_domain).items()}
