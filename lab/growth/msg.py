"""Masked structural growth, the rule: every tensor of the grown model, and the masks its config records
(Yao et al. 2024, "Masked Structural Growth for 2x Faster Language Model Pre-training", ICLR 2024, arXiv
2305.02869; the growth schedule of FLM-101B, Li et al. 2023, arXiv 2309.03852).

FPI keeps the function by making new units copies of old ones, and so starts them symmetric (copies get
equal gradients; `lab.growth.noise` and AKI are the fixes from that side). MSG keeps it from the other side:
new units, heads, hidden dimensions and layers may hold any weights, because what they contribute is
multiplied by a mask c that starts at 0 and ramps to 1 over `ramp_steps` training steps
(`lab.msg_masks`: the buffers, the ramp, the fold).

The weights: each tensor holds the source's values where every index it is grown along is a source unit
(the positions `growth_maps` leaves not `is_new`: the tail for hidden and intermediate units, the tail of
each kv group for GQA q heads), and fresh values everywhere else, drawn as a fresh model's are
(`DecoderLM.init_parameter_`: normal 0.02, residual writers scaled by 1/sqrt(2 n_layers), norms 1, biases 0),
seeded by (seed, tensor name). New layers are fresh entirely; `--depth` only says where they sit (the
layers `inserted_copies` finds in `layer_order`: on top for stack, next to the layer they follow for
interpolate and identity).

Supported, exact at mask 0 for any new weights: intermediate size (any), heads (GQA: q heads grow inside each
kv group; MHA: kv heads grow with them), hidden size (any: RMSNorm divides by the masked width) and layers
(any number). "Exact" is up to float rounding: sums now run over zeros too (tested to 1e-5 on fp32 logits;
depth-only growth is bitwise). Refused (`plan_growth`): `--noise` (nothing is copied, so there is no symmetry
to break) and `--map random` (nothing is copied, so there is no map to draw).
"""

from __future__ import annotations

from typing import Callable

import torch

from lab.config import ModelConfig
from lab.growth.depth import inserted_copies, layer_order
from lab.msg_masks import MaskRamp, with_ramp
from lab.growth.plan import GrowthPlan
from lab.growth.transform import TENSOR_RULES, growth_maps
from lab.model import DecoderLM, parameter_shapes
from lab.seeding import seeded_generator


class MaskedGrowthTensors:
    """`make(name, expert=None)` for the MSG-grown model (the callable `write_lab_checkpoint` wants), and
    `target`, the grown config with its masks at step 0 of the ramp."""

    def __init__(self, plan: GrowthPlan, read: Callable[[str], torch.Tensor]):
        self.plan, self.read = plan, read
        maps = growth_maps(plan)
        # Where the source's units sit along each grown dimension (None: the dimension is not grown).
        self.source_positions = {unit: None if m.is_identity else (~m.is_new).nonzero().flatten()
                                 for unit, m in maps.items()}
        self.order = layer_order(plan.source.n_layers, plan.target.n_layers, plan.depth, plan.placement)
        self.new_layers = inserted_copies(self.order)
        head_dim = plan.source.head_dim
        new_heads = maps["q"].is_new.reshape(plan.target.n_heads, head_dim)[:, 0].nonzero().flatten().tolist()
        ramp = MaskRamp(ramp_steps=plan.ramp_steps, step=0, dim=plan.source.dim, ffn_dim=plan.source.ffn_dim,
                        new_heads=tuple(new_heads), new_layers=tuple(sorted(self.new_layers)))
        self.target: ModelConfig = with_ramp(plan.target, ramp)
        self.shapes = parameter_shapes(plan.target)
        with torch.device("meta"):  # for init_parameter_, which needs the target's config only
            self._initializer = DecoderLM(plan.target)

    def __call__(self, name: str, expert: int | None = None) -> torch.Tensor:
        if expert is not None:
            raise ValueError(f"{name}: growth makes dense models only (no expert {expert})")
        if name.startswith("layers."):
            _, t, rest = name.split(".", 2)
            if int(t) in self.new_layers:
                return self._fresh(name, self.read("layers.0.attn_norm.weight").dtype)
            source_name = f"layers.{self.order[int(t)]}.{rest}"
        else:
            rest = source_name = name
        source = self.read(source_name)
        grown = [(dim, self.source_positions[unit]) for dim, unit, _ in TENSOR_RULES[rest]
                 if self.source_positions[unit] is not None]
        if not grown:
            return source
        return _place(self._fresh(name, source.dtype), source, grown)

    def _fresh(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A fresh model's value for tensor `name`, seeded by (seed, name): the same whatever order tensors are
        made in."""
        generator = seeded_generator(self.plan.seed, "msg new weights", name)
        out = torch.empty(self.shapes[name])
        with torch.random.fork_rng(devices=[]):  # init_parameter_ draws from the global generator
            torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))
            self._initializer.init_parameter_(name, out)
        return out.to(dtype)


def _place(fresh: torch.Tensor, source: torch.Tensor, grown: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """`fresh` with `source` written where the source's units sit along each grown dimension (one gather
    per dimension, no index tensor the size of the weight)."""
    dim, positions = grown[0]
    inner = source if len(grown) == 1 else _place(fresh.index_select(dim, positions), source, grown[1:])
    return fresh.index_copy_(dim, positions, inner.to(fresh.dtype))
