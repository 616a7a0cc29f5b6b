"""Width growth of one weight: FPI and AKI along one dimension (bert2BERT, Chen et al. 2022; AquilaMoE 2.2.1).

A linear map y = W x with W of shape (out, in). Growing the units x or y lives on is done per dimension
with a `GrowthMap` g (see `lab.growth.maps`):

- `fpi_out`: new out-unit i is old out-unit g(i), a copy (rows of W, entries of a bias or norm weight).
  Invariant: the new output units are copies of the old ones, unit g(i) at position i.
- `fpi_in`: new in-column j is old column g(j) divided by C(g(j)). Invariant: when the input's new
  units are copies of the old ones (what `fpi_out` made upstream), W' x' = W x exactly.
- `aki_out`: AKI's out-dimension (bert2BERT's Advanced Knowledge Initialization): the original
  out-units come from layer l, the new ones from the same position of layer l + 1 (already grown along
  its in-dimension). It breaks FPI's symmetry (copies of a unit get equal gradients forever) and gives
  up function preservation; neighbouring layers compute similar functions, so the new units still carry
  knowledge. Invariant: rows with `is_new` equal layer l+1's FPI rows, the others equal layer l's.

The in-dimension is always grown by FPI, in AKI too (bert2BERT: "in-dimension as FPI").
"""

from __future__ import annotations

import torch

from lab.growth.maps import GrowthMap

# Counts up to 256 are exact in bfloat16; above, the division is done in float32.
_EXACT_BF16_COUNT = 256


def fpi_out(w: torch.Tensor, m: GrowthMap, dim: int = 0) -> torch.Tensor:
    """Copy units along `dim`: out[..., i, ...] = w[..., g(i), ...]."""
    if m.is_identity:
        return w
    return _select(w, m, dim)


def _select(w: torch.Tensor, m: GrowthMap, dim: int) -> torch.Tensor:
    if m.is_cyclic:  # the same numbers as the gather below; whole blocks copied at once are faster
        repeats = [1] * w.ndim
        repeats[dim] = -(-m.new // m.old)
        return w.repeat(*repeats).narrow(dim, 0, m.new).contiguous()
    return w.index_select(dim, m.index)


def split_divisor(m: GrowthMap, ndim: int, dim: int) -> torch.Tensor:
    """C(g(j)) for every new unit j, shaped to broadcast along `dim` of an `ndim`-dimensional tensor."""
    shape = [1] * ndim
    shape[dim] = m.new
    return m.counts[m.index].reshape(shape)


def fpi_in(w: torch.Tensor, m: GrowthMap, dim: int = 1) -> torch.Tensor:
    """Split units along `dim`: out[:, j] = w[:, g(j)] / C(g(j)), so the copies of a unit sum to it."""
    if m.is_identity:
        return w
    out = _select(w, m, dim)
    divisor = split_divisor(m, w.ndim, dim)
    if int(m.counts.max()) == 1:
        return out
    if out.dtype in (torch.float32, torch.float64) or int(m.counts.max()) <= _EXACT_BF16_COUNT:
        return out.div_(divisor.to(out.dtype))
    return (out.float() / divisor).to(out.dtype)


def aki_out(w: torch.Tensor, w_next: torch.Tensor, m: GrowthMap, dim: int = 0) -> torch.Tensor:
    """AKI along `dim`: units with `is_new` copy g(i) of `w_next` (layer l + 1), the others g(i) of `w`.

    `w` and `w_next` must already be grown along their other dimensions (the in-dimension by FPI).
    """
    out = fpi_out(w, m, dim)
    new = m.is_new.nonzero().flatten()
    if new.numel() == 0:
        return out
    if out is w:
        out = w.clone()
    return out.index_copy_(dim, new, w_next.index_select(dim, m.index[new]))
