"""Drop-Upcycling (Nakamura et al. 2025): break the symmetry of copied experts by re-initialising a part of each.

Identical experts receive the same gradient only up to the router's weights, and they diverge slowly.
Drop-Upcycling re-draws a random fraction r of each expert's intermediate units, the same units in its
gate and up rows and its down columns, from Normal(mean, std) of the dense matrix they come from, so
their scale matches the trained weights. Every expert draws its own units, so the experts differ from
the start; the price is that the upcycled model no longer equals the dense one (r = 1 is a random
re-initialisation of every expert with the dense statistics).
"""

from __future__ import annotations

import torch

from lab.upcycle.granularity import INTERMEDIATE_DIM


def n_dropped(ffn_dim: int, ratio: float) -> int:
    """How many of an expert's ffn_dim units are re-initialised: round(ratio * ffn_dim)."""
    return int(round(ratio * ffn_dim))


def dropped_units(ffn_dim: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """`n_dropped(ffn_dim, ratio)` distinct intermediate indices, drawn at random, sorted."""
    return torch.randperm(ffn_dim, generator=generator)[: n_dropped(ffn_dim, ratio)].sort().values


def reinit_units(weight: torch.Tensor, which: str, units: torch.Tensor, mean: float, std: float,
                 generator: torch.Generator) -> torch.Tensor:
    """A copy of an expert weight whose `units` (rows of w_gate/w_up, columns of w_down) are new draws
    from Normal(mean, std); the other units are untouched."""
    out = weight.clone()
    dim = INTERMEDIATE_DIM[which]
    shape = list(weight.shape)
    shape[dim] = len(units)
    fresh = torch.randn(shape, generator=generator, dtype=torch.float32) * std + mean
    out.index_copy_(dim, units.to(weight.device), fresh.to(device=weight.device, dtype=weight.dtype))
    return out
