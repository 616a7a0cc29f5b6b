"""What an upcycling run is asked to do, the MoE config it produces, and the checks made before any work.

The plan is the whole recipe of sparse upcycling (Komatsuzaki et al. 2023) as the lab implements it:
how many experts, how many fire per token, the granularity of virtual groups and the weight scaling
(He et al. 2024, "Upcycling Large Language Models into Mixture of Experts"), Drop-Upcycling (Nakamura
et al. 2025), shared experts (DeepSeekMoE, Dai et al. 2024; Qwen2-MoE's shared expert; see
`lab.upcycle.shared`), the router's initial std, and which layers become MoE. AquilaMoE (BAAI 2024) upcycles
every layer to 8 experts, top-2, router ~ Normal(0, 0.02), aux-loss x 0.001 and z-loss x 0.01, each
added per layer (Megatron's sum over layers: `router_loss_aggregation="sum"`; the plan's default stays
"mean", what the lab's earlier upcycles trained with).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lab.checkpoint.hf_config import hf_model_type
from lab.config import BALANCES, ROUTER_LOSS_AGGREGATIONS, ROUTINGS, ModelConfig
from lab.errors import LabError
from lab.upcycle.shared import routed_group_size, shared_expert_ffn_dim

# Megatron, FlagScale and Hugging Face initialise routers with std 0.02; the AquilaMoE paper writes
# "variance 0.02" (arXiv 2408.06567, 2.2.2), i.e. std sqrt(0.02) = 0.141; the lab follows the
# implementations and keeps the paper's reading as PAPER_ROUTER_VARIANCE.
DEFAULT_ROUTER_STD = 0.02
PAPER_ROUTER_VARIANCE = 0.02


@dataclass(frozen=True)
class UpcyclePlan:
    """The options of one upcycling run (see `lab.upcycle` for what each one does).

    `n_experts` and `top_k` count fine-grained experts: with `granularity` G each expert is a 1/G
    slice of the dense MLP, and the E experts form E/G virtual groups. `shared_experts` N takes N of the
    G slices out of the groups into one always-on shared expert (Qwen2-MoE's), so the E routed experts
    form groups of G - N (`lab.upcycle.shared`). `every` N upcycles the layers
    i with (i + 1) % N == 0 (Qwen2-MoE's `decoder_sparse_step`); the others stay dense.
    `weight_scaling` multiplies each expert's down projection by `expert_scale` (He et al. 2024);
    without it a fine-grained or softmax_topk upcycle starts away from the dense model. `noise` adds
    Normal(0, noise * std of the dense matrix) to every expert weight. `router_loss_aggregation`
    ("sum" | "mean") is how the MoE layers' auxiliary losses combine (`lab.moe`); like the two
    coefficients it is written into the output's config.json, where training reads it. So are `balance`
    ("aux_loss" | "aux_free" | "none") and `balance_bias_rate`, the aux-loss-free balancing of `lab.moe`;
    the upcycled model starts with zero expert biases, so the upcycle stays function-preserving.
    """

    n_experts: int = 8
    top_k: int = 2
    granularity: int = 1
    shared_experts: int = 0
    routing: str = "topk_softmax"
    router_init_std: float = DEFAULT_ROUTER_STD
    weight_scaling: bool = True
    drop_ratio: float = 0.0
    noise: float = 0.0
    every: int = 1
    seed: int = 0
    aux_loss_coef: float = 0.001
    z_loss_coef: float = 0.01
    router_loss_aggregation: str = "mean"
    balance: str = "aux_loss"
    balance_bias_rate: float = 0.001


def upcycled_layers(n_layers: int, every: int) -> tuple[int, ...]:
    """Layers i with (i + 1) % every == 0: every layer for 1, layers 1, 3, 5... for 2.

    The same rule as Qwen2-MoE's `decoder_sparse_step`, so the layout reads naturally in transformers
    (the lab also writes `mlp_only_layers` explicitly).
    """
    return tuple(i for i in range(n_layers) if (i + 1) % every == 0)


def check_plan(source: ModelConfig, plan: UpcyclePlan) -> None:
    """Raise LabError with one line naming the option when `plan` cannot upcycle `source`."""
    E, k, G, N = plan.n_experts, plan.top_k, plan.granularity, plan.shared_experts
    if source.is_moe:
        raise LabError(f"the source is already a Mixture of Experts ({source.n_experts} experts); "
                       "upcycle a dense checkpoint")
    if E < 1 or k < 1 or G < 1:
        raise LabError(f"--num-experts, --top-k and --granularity must be positive (got {E}, {k}, {G})")
    if k > E:
        raise LabError(f"--top-k {k} is larger than --num-experts {E}")
    if N:
        _check_shared_experts(source, plan)
    elif E % G:
        raise LabError(f"--num-experts {E} is not a multiple of --granularity {G} "
                       f"(the experts form virtual groups of {G})")
    elif k % G:
        raise LabError(f"--top-k {k} is not a multiple of --granularity {G} "
                       "(the G slices of a virtual group must fire together to equal the dense MLP)")
    if source.ffn_dim % G:
        raise LabError(f"the source's ffn_dim {source.ffn_dim} is not divisible by --granularity {G} "
                       "(each expert is a 1/G slice of the dense MLP)")
    if plan.routing not in ROUTINGS:
        raise LabError(f"--routing {plan.routing!r}: must be one of {', '.join(ROUTINGS)}")
    if not (plan.router_init_std > 0 and math.isfinite(plan.router_init_std)):
        raise LabError(f"the router's init std must be positive, got {plan.router_init_std}")
    if not 0.0 <= plan.drop_ratio <= 1.0:
        raise LabError(f"--drop-ratio must be in [0, 1], got {plan.drop_ratio}")
    if not (math.isfinite(plan.noise) and plan.noise >= 0):
        raise LabError(f"--noise must be a finite number >= 0, got {plan.noise}")
    for name in ("aux_loss_coef", "z_loss_coef", "balance_bias_rate"):
        value = getattr(plan, name)
        if not (math.isfinite(value) and value >= 0):
            raise LabError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    if not 1 <= plan.every <= source.n_layers:
        raise LabError(f"--every {plan.every}: must be in [1, n_layers={source.n_layers}]")
    if plan.router_loss_aggregation not in ROUTER_LOSS_AGGREGATIONS:
        raise LabError(f"--router-loss-aggregation {plan.router_loss_aggregation!r}: "
                       f"must be one of {', '.join(ROUTER_LOSS_AGGREGATIONS)}")
    if plan.balance not in BALANCES:
        raise LabError(f"--balance {plan.balance!r}: must be one of {', '.join(BALANCES)}")


def _check_shared_experts(source: ModelConfig, plan: UpcyclePlan) -> None:
    """The checks of `check_plan` that change with N shared experts: groups hold G - N routed slices."""
    E, k, G, N = plan.n_experts, plan.top_k, plan.granularity, plan.shared_experts
    if N < 0:
        raise LabError(f"--shared-experts must be >= 0, got {N}")
    if N >= G:
        raise LabError(f"--shared-experts {N} needs --granularity of at least {N + 1}, got {G} (the dense MLP "
                       f"is cut into G slices: N become the shared expert, the others the routed experts)")
    group = routed_group_size(G, N)
    if E % group:
        raise LabError(f"--num-experts {E} is not a multiple of --granularity {G} - --shared-experts {N} = {group} "
                       f"(the routed experts form virtual groups of the {group} slices that are not shared)")
    if k % group:
        raise LabError(f"--top-k {k} is not a multiple of --granularity {G} - --shared-experts {N} = {group} "
                       "(the slices of a virtual group must fire together to equal the dense MLP)")
    if source.sliding_window:
        raise LabError(f"--shared-experts: the output is qwen2_moe, which cannot express the source's "
                       f"sliding_window={source.sliding_window}")


def upcycle_config(source: ModelConfig, plan: UpcyclePlan) -> ModelConfig:
    """The MoE config an upcycle of `source` produces, after `check_plan`; also checks that a
    Hugging Face model type can hold it (a sliding window, for one, fits only Mixtral)."""
    check_plan(source, plan)
    try:
        target = source.replace(
            n_experts=plan.n_experts, top_k=plan.top_k, routing=plan.routing,
            moe_ffn_dim=source.ffn_dim // plan.granularity,
            shared_expert_ffn_dim=shared_expert_ffn_dim(source.ffn_dim, plan.granularity, plan.shared_experts),
            moe_layers=upcycled_layers(source.n_layers, plan.every),
            aux_loss_coef=plan.aux_loss_coef, z_loss_coef=plan.z_loss_coef,
            router_loss_aggregation=plan.router_loss_aggregation, balance=plan.balance,
            balance_bias_rate=plan.balance_bias_rate)
    except ValueError as e:
        raise LabError(str(e)) from None
    hf_model_type(target)  # raises CheckpointError (a LabError) when no format fits
    return target
