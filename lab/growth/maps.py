"""Growth maps: which old unit each new unit of a grown dimension copies (bert2BERT, Net2Net).

A map `g` of a dimension grown from `old` to `new` units sends each new index to an old one, with
`g(i) = i` for the original units. `C(k)`, the number of new units that copy old unit `k`, is what an
in-dimension split divides by, so that the sum over the copies is the old weight.

- cyclic (the lab's default): `g(i) = i mod old`. With an integer ratio every unit is copied the same
  number of times, which is what keeps RMSNorm, and so the whole function, exact (bert2BERT, arXiv
  2110.07143, 3.1; AquilaMoE, arXiv 2408.06567, Table 2).
- random (bert2BERT): the units beyond `old` copy old units drawn uniformly at random (seeded).
- grouped (AquilaMoE's GQA rule): attention heads grow inside each kv group, one of the two maps above
  per group, in Hugging Face's GQA layout (q heads of group j at [j * per_group, (j + 1) * per_group)).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

MAP_KINDS = ("cyclic", "random")


@dataclass(frozen=True)
class GrowthMap:
    """A grown dimension: `index[i]` is the old unit new unit `i` copies; `is_new[i]` says whether unit
    `i` is a unit the growth added (AKI fills exactly those from the next layer)."""

    index: torch.Tensor  # (new,) int64, values in [0, old)
    is_new: torch.Tensor  # (new,) bool
    old: int

    @property
    def new(self) -> int:
        return self.index.numel()

    @property
    def counts(self) -> torch.Tensor:
        """C(k) for every old unit k: (old,) int64, each >= 1."""
        return torch.bincount(self.index, minlength=self.old)

    @cached_property
    def is_identity(self) -> bool:
        return self.new == self.old and bool((self.index == torch.arange(self.old)).all())

    @cached_property
    def is_cyclic(self) -> bool:
        """g(i) = i mod old: the grown dimension is the old one repeated (a plain copy, faster than a gather)."""
        return bool((self.index == torch.arange(self.new) % self.old).all())

    def units(self, size: int) -> "GrowthMap":
        """The same map on blocks of `size` consecutive units (a head map on the rows of q/k/v)."""
        offsets = torch.arange(size)
        return GrowthMap((self.index[:, None] * size + offsets).flatten(),
                         self.is_new.repeat_interleave(size), self.old * size)


def _new_indices(old: int, new: int, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    if kind == "cyclic":
        return torch.arange(new) % old
    if kind == "random":
        extra = torch.randint(0, old, (new - old,), generator=generator)
        return torch.cat([torch.arange(old), extra])
    raise ValueError(f"unknown growth map {kind!r} (known: {', '.join(MAP_KINDS)})")


def growth_map(old: int, new: int, kind: str = "cyclic", generator: torch.Generator | None = None) -> GrowthMap:
    """The map of a dimension grown from `old` to `new` units (new >= old): originals map to themselves."""
    if new < old:
        raise ValueError(f"a growth map cannot shrink {old} units to {new}")
    index = _new_indices(old, new, kind, generator)
    return GrowthMap(index, torch.arange(new) >= old, old)


def grouped_map(n_groups: int, old_per_group: int, new_per_group: int, kind: str = "cyclic",
                generator: torch.Generator | None = None) -> GrowthMap:
    """A head map that grows each of `n_groups` groups from `old_per_group` to `new_per_group` heads.

    New head p of group j copies head g(p) of the same group j, so it keeps reading group j's kv head:
    index[j * new_per_group + p] = j * old_per_group + g(p).
    """
    maps = [growth_map(old_per_group, new_per_group, kind, generator) for _ in range(n_groups)]
    index = torch.cat([j * old_per_group + m.index for j, m in enumerate(maps)])
    return GrowthMap(index, torch.cat([m.is_new for m in maps]), n_groups * old_per_group)
