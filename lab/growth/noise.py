"""Symmetric noise: break FPI's symmetry and keep the function (the idea of Apple's HyperCloning, 2024).

FPI's copies of a unit stay copies forever: they receive equal gradients. bert2BERT's random map and
AKI break the symmetry by giving up exactness. Symmetric noise is a third way: on the in-dimension
split of a unit copied c times, copy k gets the weight w / c + e_k with sum_k e_k = 0 (for c = 2: +e and
-e). The copies of the input carry equal values, so the sum over the copies is still w x: the
function is unchanged, yet the columns, and so the gradients of the units upstream, now differ.

Invariant: with a map whose copies carry equal values (any integer-ratio cyclic growth), adding
`symmetric_noise` to an `fpi_in` split leaves W' x' unchanged (up to float rounding); a unit copied
once gets no noise at all.
"""

from __future__ import annotations

import torch

from lab.growth.maps import GrowthMap


def symmetric_noise(shape: tuple[int, ...], m: GrowthMap, dim: int, std: float,
                    generator: torch.Generator) -> torch.Tensor:
    """Noise of `shape` (fp32) whose entries sum to zero over the copies of each old unit along `dim`.

    Draw Normal(0, std) per entry, then subtract, within every group of copies, the group's mean.
    """
    noise = torch.randn(shape, generator=generator, dtype=torch.float32) * std
    moved = noise.movedim(dim, 0)  # (new, ...) a view: edits reach `noise`
    sums = torch.zeros((m.old, *moved.shape[1:]), dtype=torch.float32).index_add_(0, m.index, moved)
    means = sums / m.counts.to(torch.float32).reshape(-1, *[1] * (moved.ndim - 1))
    moved.sub_(means.index_select(0, m.index))
    return noise
