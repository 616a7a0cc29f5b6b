"""Where the router sends tokens: expert load per layer, per domain, measured on the validation text.

A training run's `metrics.jsonl` records tokens per expert over each step's batch, all domains mixed.
Which experts a domain uses (code against Chinese poems, say) needs a forward pass per domain; the
validation windows of `lab.teach.loop` are the same text at every call, so loads measured at different
steps compare.
"""

from __future__ import annotations

import torch

from lab.teach.loop import validation_windows
from lab.train.evaluate import expert_load_by_domain as count_by_domain


def shares(counts: torch.Tensor) -> torch.Tensor:
    """(n_moe_layers, n_experts) counts as each layer's shares of its assignments (rows sum to 1)."""
    counts = counts.float()
    return counts / counts.sum(dim=1, keepdim=True)


@torch.no_grad()
def expert_load(model, tokens: torch.Tensor) -> torch.Tensor:
    """(n_moe_layers, n_experts) fraction of the T * top_k assignments each expert got on `tokens` (n, T);
    each row sums to 1."""
    if not model.config.is_moe:
        raise ValueError("the model has no MoE layer")
    return shares(count_by_domain(model, {"tokens": tokens})["tokens"])


def expert_load_by_domain(model, seq_len: int = 64, n_per_domain: int = 4) -> dict[str, torch.Tensor]:
    """`expert_load` on each domain's validation windows: {domain: (n_moe_layers, n_experts)}."""
    counts = count_by_domain(model, validation_windows(seq_len, n_per_domain))
    return {domain: shares(c) for domain, c in counts.items()}


def load_cv(tokens_per_expert) -> float:
    """How uneven one step's load is: per MoE layer, the population std of the tokens each expert got over
    their mean (0 at perfect balance), averaged over layers; `tokens_per_expert` is a record's (L, E) counts.
    The seeded experiments' `load_cv` (lab.experiments.readings) is the same measure over a window of steps."""
    counts = torch.as_tensor(tokens_per_expert, dtype=torch.float64)
    return (counts.std(dim=1, unbiased=False) / counts.mean(dim=1)).mean().item()


def with_load_cv(records: list[dict]) -> list[dict]:
    """Train records with their step's `load_cv` added (the others unchanged), for `router_metrics_figure`."""
    return [{**r, "load_cv": load_cv(r["tokens_per_expert"])} if r.get("tokens_per_expert") else r for r in records]
