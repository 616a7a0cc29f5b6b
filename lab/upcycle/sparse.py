"""Sparse upcycling (Komatsuzaki et al. 2023): every dense MLP becomes E experts, everything else is copied.

`UpcycleTensors` is the whole transform as one rule per output tensor: given the dense model's tensors
(one at a time, by lab name), it makes any tensor of the upcycled model. The streaming writer and the
in-memory API both call it, so a checkpoint and a notebook model are the same numbers.

Invariant (topk_softmax, granularity G, drop_ratio 0, noise 0): the upcycled model equals the dense
one, logit for logit, whatever the router (experts are slices of the dense MLP, a virtual group's
slices fire together, and the down projections are scaled by G; see `lab.upcycle.granularity`). With
N shared experts, N slices form the always-on shared expert and the groups hold the other G - N, with
the same invariant (`lab.upcycle.shared`).

Randomness (router rows, dropped units, noise) comes from generators seeded by (seed, layer, expert,
purpose), so a tensor's value does not depend on the order in which tensors are made.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from lab.config import ModelConfig
from lab.seeding import seeded_generator
from lab.upcycle.drop import dropped_units, reinit_units
from lab.upcycle.granularity import expert_scale, expert_slice, group_rows
from lab.upcycle.plan import UpcyclePlan
from lab.upcycle.shared import routed_group_size, routed_shard, shared_expert_gate_weight, shared_expert_weight

DENSE_NAMES = {"w_gate": "gate_proj", "w_up": "up_proj", "w_down": "down_proj"}
# The shared expert's projections (lab.mlp.MLP's names), by the expert weight they are cut like.
SHARED_NAMES = {f"shared_expert.{dense}.weight": which for which, dense in DENSE_NAMES.items()}


def expert_down_scale(plan: UpcyclePlan) -> float:
    """The factor on every routed expert's down projection: `expert_scale` for groups of G - N slices
    (G, or G - N with shared experts, for topk_softmax), 1 without weight scaling."""
    if not plan.weight_scaling:
        return 1.0
    group = routed_group_size(plan.granularity, plan.shared_experts)
    return expert_scale(plan.routing, plan.n_experts, group, plan.top_k)


def router_weight(plan: UpcyclePlan, layer: int, dim: int) -> torch.Tensor:
    """Router weights (E, dim) of one layer: one Normal(0, router_init_std) row per virtual group,
    repeated once per expert of the group (G, or G - N with N shared experts), fp32. Depends only on
    (seed, layer)."""
    generator = seeded_generator(plan.seed, "router", layer)
    group = routed_group_size(plan.granularity, plan.shared_experts)
    rows = torch.randn(plan.n_experts // group, dim, generator=generator) * plan.router_init_std
    return group_rows(rows, group)


class UpcycleTensors:
    """`make(name, expert)` for the upcycled model: the callable `write_lab_checkpoint` wants.

    `read(name)` returns a dense-model tensor by lab name. Expert weights are made per expert
    (`expert=e`) or stacked (E, ...) when `expert` is None. An expert weight is: the expert's slice of
    the dense weight, its dropped units re-drawn (Drop-Upcycling), noise added, and, for w_down, scaled
    by `expert_scale` when the plan asks for weight scaling. The shared expert (with `shared_experts` N)
    is the first N slices, its down projection x 2, and its gate zero (`lab.upcycle.shared`); Drop-
    Upcycling and noise leave it alone, since they break the symmetry of copies and it has none.
    """

    def __init__(self, plan: UpcyclePlan, source: ModelConfig, target: ModelConfig,
                 read: Callable[[str], torch.Tensor]):
        self.plan, self.source, self.target, self.read = plan, source, target, read
        self.scale = expert_down_scale(plan)
        # The experts of a weight all read its dense weight (and Drop-Upcycling its statistics): each is
        # read once for as long as the experts of one layer are made, in whatever order they are asked.
        self._dense = functools.lru_cache(maxsize=len(DENSE_NAMES))(self._read_dense)
        self._stats = functools.lru_cache(maxsize=len(DENSE_NAMES))(self._dense_stats)

    def key(self, name: str, expert: int | None = None) -> tuple:
        """What tensor `name` (of `expert`) depends on. Routed experts cut from the same shard of the dense
        MLP are equal unless Drop-Upcycling or noise gives each its own draws; the writer makes each
        distinct one once (`lab.checkpoint.memo`)."""
        plan, parts = self.plan, name.split(".")
        which = ".".join(parts[3:])
        if expert is not None and which in DENSE_NAMES and plan.drop_ratio == 0 and plan.noise == 0:
            return ("expert", int(parts[1]), which, routed_shard(expert, plan.granularity, plan.shared_experts))
        return ("tensor", name, expert)

    def __call__(self, name: str, expert: int | None = None) -> torch.Tensor:
        parts = name.split(".")
        if parts[0] != "layers" or not self.target.is_moe_layer(int(parts[1])):
            return self.read(name)
        layer, rest = int(parts[1]), ".".join(parts[2:])
        if rest == "mlp.router.weight":
            return router_weight(self.plan, layer, self.target.dim)
        which = rest.removeprefix("mlp.")
        if which == "shared_expert_gate.weight":
            return shared_expert_gate_weight(self.target.dim)
        if which in SHARED_NAMES:
            dense = self._dense(layer, SHARED_NAMES[which]).float()
            return shared_expert_weight(dense, SHARED_NAMES[which], self.plan.granularity, self.plan.shared_experts)
        if which not in DENSE_NAMES:
            return self.read(name)
        if expert is None:
            return torch.stack([self.expert_weight(layer, which, e) for e in range(self.plan.n_experts)])
        return self.expert_weight(layer, which, expert)

    def _read_dense(self, layer: int, which: str) -> torch.Tensor:
        return self.read(f"layers.{layer}.mlp.{DENSE_NAMES[which]}.weight")

    def _dense_stats(self, layer: int, which: str) -> tuple[float, float]:
        """The mean and std of a dense weight (in fp32), what Drop-Upcycling and noise are scaled by."""
        dense = self._dense(layer, which).float()
        return dense.mean().item(), dense.std().item()

    def expert_weight(self, layer: int, which: str, expert: int) -> torch.Tensor:
        plan = self.plan
        shard = routed_shard(expert, plan.granularity, plan.shared_experts)
        weight = expert_slice(self._dense(layer, which), which, shard, plan.granularity)
        scaled = which == "w_down" and self.scale != 1.0
        if plan.drop_ratio == 0 and plan.noise == 0 and not scaled:
            return weight  # a slice of the dense weight in its own dtype: what the fp32 path gives, cast back
        weight = weight.float()
        mean, std = self._stats(layer, which)
        if plan.drop_ratio > 0:
            # The same units in gate, up and down: the generator for the indices ignores `which`.
            units = dropped_units(self.target.moe_ffn_dim, plan.drop_ratio,
                                  seeded_generator(plan.seed, "drop", layer, expert))
            weight = reinit_units(weight, which, units, mean, std,
                                  seeded_generator(plan.seed, "drop-values", layer, expert, which))
        if plan.noise > 0:
            noise = torch.randn(weight.shape, generator=seeded_generator(plan.seed, "noise", layer, expert, which))
            weight = weight + noise.to(weight.device) * (plan.noise * std)
        if scaled:
            weight = weight * self.scale
        return weight
