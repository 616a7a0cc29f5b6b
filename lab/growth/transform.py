"""The whole growth as one rule per output tensor: `GrowthTensors(plan, read)(name)` makes any tensor of
the grown model from the one or two source tensors it needs.

The streaming writer and the in-memory API both call it, so a grown checkpoint and a grown notebook
model are the same numbers. Every tensor is grown along each of its dimensions by the map of the unit
that dimension indexes:

| tensor                       | dim 0 (out)        | dim 1 (in)       |
|------------------------------|--------------------|------------------|
| tok_embeddings (V, D)        | -                  | hidden, copied   |
| attn_norm, mlp_norm, norm    | hidden, copied     |                  |
| q_proj (H hd, D), bias       | q heads            | hidden, split    |
| k_proj, v_proj (K hd, D)     | kv heads           | hidden, split    |
| o_proj (D, H hd)             | hidden             | q heads, split   |
| gate_proj, up_proj (F, D)    | ffn                | hidden, split    |
| down_proj (D, F)             | hidden             | ffn, split       |
| lm_head (V, D)               | -                  | hidden, split    |

"copied" and out-dimensions use FPI (`fpi_out`), or AKI (`aki_out`: new units from layer l + 1) for
the out-dimensions of a layer's projections; "split" is FPI's in-dimension (`fpi_in`), with symmetric
noise when asked. Norm weights scale what a layer *reads*, so under AKI they follow the in-dimension
and stay FPI copies; so do the embeddings, the final norm and the LM head, which have no layer l + 1.
AKI's top source layer, which has no l + 1, uses FPI (bert2BERT). Width is grown per source layer,
then depth picks the grown layers (`lab.growth.depth`); AKI's l + 1 is the next *source* layer.

Invariant (`GrowthPlan.is_exact`): FPI with the cyclic map and an integer hidden ratio, any
intermediate size and head count, and identity depth, gives a model with the source's logits.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from lab.growth.depth import RESIDUAL_WRITERS, inserted_copies, layer_order
from lab.growth.maps import GrowthMap, growth_map, grouped_map
from lab.growth.noise import symmetric_noise
from lab.growth.plan import GrowthPlan
from lab.growth.width import aki_out, fpi_in, fpi_out
from lab.model import parameter_shapes
from lab.seeding import seeded_generator

# Per tensor: (dimension, unit, how) for each grown dimension. "out" may be AKI, "copy" is always FPI.
TENSOR_RULES: dict[str, tuple[tuple[int, str, str], ...]] = {
    "tok_embeddings.weight": ((1, "hidden", "copy"),),
    "norm.weight": ((0, "hidden", "copy"),),
    "lm_head.weight": ((1, "hidden", "split"),),
    "attn_norm.weight": ((0, "hidden", "copy"),),
    "mlp_norm.weight": ((0, "hidden", "copy"),),
    "attn.q_proj.weight": ((1, "hidden", "split"), (0, "q", "out")),
    "attn.q_proj.bias": ((0, "q", "out"),),
    "attn.k_proj.weight": ((1, "hidden", "split"), (0, "kv", "out")),
    "attn.k_proj.bias": ((0, "kv", "out"),),
    "attn.v_proj.weight": ((1, "hidden", "split"), (0, "kv", "out")),
    "attn.v_proj.bias": ((0, "kv", "out"),),
    "attn.o_proj.weight": ((1, "q", "split"), (0, "hidden", "out")),
    "mlp.gate_proj.weight": ((1, "hidden", "split"), (0, "ffn", "out")),
    "mlp.up_proj.weight": ((1, "hidden", "split"), (0, "ffn", "out")),
    "mlp.down_proj.weight": ((1, "ffn", "split"), (0, "hidden", "out")),
}


def growth_maps(plan: GrowthPlan) -> dict[str, GrowthMap]:
    """The map of every grown unit: hidden, ffn, and the rows of q and of k/v (whole heads of head_dim).

    Random maps are seeded by (seed, unit), so they do not depend on the order tensors are made in.
    """
    s, t = plan.source, plan.target

    def gen(unit: str) -> torch.Generator:
        return seeded_generator(plan.seed, "growth map", unit)

    if plan.grouped_heads:  # GQA rule: kv groups kept, q heads grow inside each group
        K = s.n_kv_heads
        q_heads = grouped_map(K, s.n_heads // K, t.n_heads // K, plan.map, gen("heads"))
        kv_heads = growth_map(K, K)
    else:  # MHA stays MHA: every head is one unit, kv heads grow with the q heads
        q_heads = kv_heads = growth_map(s.n_heads, t.n_heads, plan.map, gen("heads"))
    return {"hidden": growth_map(s.dim, t.dim, plan.map, gen("hidden")),
            "ffn": growth_map(s.ffn_dim, t.ffn_dim, plan.map, gen("ffn")),
            "q": q_heads.units(s.head_dim), "kv": kv_heads.units(s.head_dim)}


class GrowthTensors:
    """`make(name, expert=None)` for the grown model: the callable `write_lab_checkpoint` wants.

    `read(name)` returns a source tensor by lab name (for a tied source, "lm_head.weight" must read
    the embedding, as `CheckpointSource.tensor` does).
    """

    def __init__(self, plan: GrowthPlan, read: Callable[[str], torch.Tensor]):
        self.plan, self.read = plan, read
        self.maps = growth_maps(plan)
        self.order = layer_order(plan.source.n_layers, plan.target.n_layers, plan.depth, plan.placement)
        self.zeroed = inserted_copies(self.order) if plan.depth == "identity" else set()
        self.aki = plan.method in ("aki", "aki-pro")

    @functools.cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The grown model's parameter shapes, for the zeroed blocks of identity depth (built only then: it
        takes a model built on the meta device)."""
        return parameter_shapes(self.plan.target)

    def key(self, name: str, expert: int | None = None) -> tuple:
        """What tensor `name` depends on: the source tensor it is grown from (and, for an inserted identity
        block's residual writers, nothing: zeros). Depth growth repeats a source layer, so equal keys are
        equal tensors; the writer makes each once (`lab.checkpoint.memo`)."""
        if not name.startswith("layers."):
            return ("grown", name)
        _, t, rest = name.split(".", 2)
        if int(t) in self.zeroed and rest in RESIDUAL_WRITERS:
            return ("zeros", rest)
        return ("grown", f"layers.{self.order[int(t)]}.{rest}")

    def __call__(self, name: str, expert: int | None = None) -> torch.Tensor:
        if expert is not None:
            raise ValueError(f"{name}: growth makes dense models only (no expert {expert})")
        if not name.startswith("layers."):
            return self._grow(name, layer=None)
        _, t, rest = name.split(".", 2)
        layer = self.order[int(t)]
        if int(t) in self.zeroed and rest in RESIDUAL_WRITERS:
            # An inserted copy writes nothing into the residual stream: the block is an identity.
            dtype = self.read(f"layers.{layer}.attn_norm.weight").dtype
            return torch.zeros(self.shapes[name], dtype=dtype)
        return self._grow(rest, layer)

    def _in_grown(self, source_name: str, rest: str) -> torch.Tensor:
        """The source tensor with every dimension but the AKI-able out-dimension grown."""
        w = self.read(source_name)
        for dim, unit, how in TENSOR_RULES[rest]:
            if how == "split":
                w = fpi_in(w, self.maps[unit], dim)
            elif how == "copy":
                w = fpi_out(w, self.maps[unit], dim)
        return w

    def _grow(self, rest: str, layer: int | None) -> torch.Tensor:
        source_name = rest if layer is None else f"layers.{layer}.{rest}"
        w = self._in_grown(source_name, rest)
        for dim, unit, how in TENSOR_RULES[rest]:
            if how != "out":
                continue
            m = self.maps[unit]
            if self.aki and layer is not None and layer + 1 < self.plan.source.n_layers and m.is_new.any():
                w = aki_out(w, self._in_grown(f"layers.{layer + 1}.{rest}", rest), m, dim)
            else:
                w = fpi_out(w, m, dim)
        return self._with_noise(w, rest, source_name)

    def _with_noise(self, w: torch.Tensor, rest: str, source_name: str) -> torch.Tensor:
        """Symmetric noise on the split dimension, seeded by (seed, source tensor): the copies of a layer
        made by depth growth get the same noise, whatever order the tensors are asked in."""
        split = [(dim, self.maps[unit]) for dim, unit, how in TENSOR_RULES[rest] if how == "split"]
        if self.plan.noise == 0 or not split or split[0][1].is_identity:
            return w
        dim, m = split[0]
        std = self.plan.noise * self.read(source_name).float().std().item()
        generator = seeded_generator(self.plan.seed, "growth noise", source_name)
        noise = symmetric_noise(tuple(w.shape), m, dim, std, generator)
        return (w.float() + noise).to(w.dtype)
