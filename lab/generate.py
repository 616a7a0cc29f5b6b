"""Text generation with a KV cache: greedy, or temperature and top-p (nucleus) sampling."""

from __future__ import annotations

import torch


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of logits (B, V): argmax when temperature == 0, else sample from
    softmax(logits / temperature) restricted to the smallest set of tokens whose mass reaches top_p."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep a token while the mass before it is below top_p: the top token always survives.
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, input_ids: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.0,
             top_p: float = 1.0, eos_token_id: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue each prompt of input_ids (B, T) by up to max_new_tokens; returns (B, T + new).

    The prompt is run once to fill the cache, then one token at a time. A row that has produced
    eos_token_id keeps producing it; generation stops when every row has.
    """
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (batch, tokens) with at least one token, got {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    was_training = model.training
    model.eval()
    B, T = input_ids.shape
    cache = model.new_cache(B, T + max_new_tokens)
    tokens = input_ids
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    step_input = input_ids
    for _ in range(max_new_tokens):
        logits = model(step_input, cache=cache).logits[:, -1]  # (B, V)
        next_token = sample_next(logits, temperature, top_p, generator)
        if eos_token_id is not None:
            next_token = next_token.masked_fill(finished, eos_token_id)
            finished |= next_token == eos_token_id
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        if finished.all():
            break
        step_input = next_token[:, None]
    model.train(was_training)
    return tokens
