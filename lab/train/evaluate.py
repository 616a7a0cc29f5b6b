"""Evaluation during training: validation loss per domain, and a short greedy sample per domain."""

from __future__ import annotations

import contextlib

import torch

from lab.errors import LabError

from lab.generate import sample_next


@torch.no_grad()
def validation_losses(model, batches: dict[str, torch.Tensor], device: torch.device,
                      autocast=contextlib.nullcontext) -> dict[str, float]:
    """Mean next-token loss (the LM loss, without auxiliary terms) on each domain's fixed windows (n, T)."""
    return validation_eval(model, batches, device, autocast)[0]


@torch.no_grad()
def validation_eval(model, batches: dict[str, torch.Tensor], device: torch.device, autocast=contextlib.nullcontext
                    ) -> tuple[dict[str, float], dict[str, list[list[int]]] | None]:
    """Per domain: the mean LM loss on its fixed windows, and for an MoE where the routers send its
    tokens, as counts per expert per MoE layer (None for a dense model).

    The windows are the same at every evaluation, so loads at different steps are comparable: this is
    how expert specialisation by domain shows over training (the dashboard's Expert load page).
    """
    was_training = model.training
    model.eval()
    losses, loads = {}, {}
    for domain, ids in batches.items():
        ids = ids.to(device)
        with autocast():
            out = model(ids, labels=ids)
        losses[domain] = out.lm_loss.item()
        if out.tokens_per_expert is not None:
            loads[domain] = out.tokens_per_expert.long().tolist()
    model.train(was_training)
    return losses, (loads or None)


@torch.no_grad()
def expert_load_by_domain(model, batches: dict[str, torch.Tensor], device: torch.device | None = None
                          ) -> dict[str, torch.Tensor]:
    """Per domain, an MoE's tokens per expert on that domain's windows: (n_moe_layers, n_experts) counts
    of the top-k assignments (each row sums to tokens x top_k). The same count `validation_eval` records."""
    if not model.config.is_moe:
        raise LabError("the model is dense: it has no experts to count")
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    loads = {domain: model(ids.to(device)).tokens_per_expert.detach().cpu() for domain, ids in batches.items()}
    model.train(was_training)
    return loads


@torch.no_grad()
def greedy_samples(model, tokenizer, prompts: dict[str, str], n_tokens: int, device: torch.device,
                   eos: int | None = None, autocast=contextlib.nullcontext) -> dict[str, str]:
    """Each prompt continued by up to `n_tokens` greedy tokens (the continuation only, decoded).

    Each token re-reads the whole sequence instead of using a KV cache: it costs little for a few
    dozen tokens, and works unchanged on a sharded model whose parameters compute in bf16 (every
    process runs the same forward passes and picks the same tokens).
    """
    was_training = model.training
    model.eval()
    out = {}
    for domain, prompt in prompts.items():
        ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False).ids], device=device)
        start = ids.shape[1]
        for _ in range(n_tokens):
            with autocast():
                logits = model(ids).logits[:, -1].float()
            token = sample_next(logits)  # (1,)
            if eos is not None and token.item() == eos:
                break
            ids = torch.cat([ids, token[:, None]], dim=1)
        out[domain] = tokenizer.decode(ids[0, start:].tolist())
    model.train(was_training)
    return out
