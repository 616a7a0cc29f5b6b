"""`python -m lab upcycle SRC OUT`: sparse upcycling of a dense checkpoint into a Mixture of Experts."""

from __future__ import annotations

import argparse
import math

from lab.commands import (add_output_arguments, check_output_resources, check_verify_request, fraction,
                          non_negative_float, positive_int, seed, verify_if_asked)
from lab.config import BALANCES, ROUTER_LOSS_AGGREGATIONS
from lab.flops import active_parameters, total_parameters

ORDER = 40


def _plan(args: argparse.Namespace):
    from lab.upcycle import UpcyclePlan

    std = math.sqrt(args.router_init_variance) if args.router_init_variance is not None else args.router_init_std
    return UpcyclePlan(n_experts=args.num_experts, top_k=args.top_k, granularity=args.granularity,
                       shared_experts=args.shared_experts,
                       routing=args.routing, router_init_std=std, weight_scaling=not args.no_weight_scaling,
                       drop_ratio=args.drop_ratio, noise=args.noise, every=args.every, seed=args.seed,
                       aux_loss_coef=args.aux_loss_coef, z_loss_coef=args.z_loss_coef,
                       router_loss_aggregation=args.router_loss_aggregation, balance=args.balance,
                       balance_bias_rate=args.balance_bias_rate)


def run(args: argparse.Namespace) -> None:
    from lab.checkpoint import read_config
    from lab.checkpoint.io import check_output_dir
    from lab.checkpoint.hf_config import hf_model_type, why_model_type
    from lab.derive import upcycle_checkpoint
    from lab.upcycle import upcycle_config
    from lab.upcycle.shared import routed_group_size
    from lab.upcycle.sparse import expert_down_scale

    plan = _plan(args)
    check_output_dir(args.out, overwrite=args.force, inputs=(args.src,))
    check_verify_request(args)
    source, source_type = read_config(args.src)
    target = upcycle_config(source, plan)  # every check, before any work
    model_type, why = hf_model_type(target), why_model_type(target)
    check_output_resources(args, target, model_type)
    scale = expert_down_scale(plan)
    layers = "all" if target.n_moe_layers == target.n_layers else str(list(target.moe_layers))
    print(f"upcycle {args.src} ({source_type}, {source.n_layers} layers, dim {source.dim}, "
          f"ffn_dim {source.ffn_dim}) -> {args.out}")
    print(f"  {plan.n_experts} experts, top-{plan.top_k}, granularity {plan.granularity} "
          f"(moe_ffn_dim {target.moe_ffn_dim}), routing {plan.routing}, MoE layers {layers}")
    if plan.shared_experts:
        print(f"  shared experts {plan.shared_experts}: the first {plan.shared_experts} of {plan.granularity} slices "
              f"as one always-on shared expert (shared_expert_ffn_dim {target.shared_expert_ffn_dim}), gate 0 "
              f"(sigmoid 1/2), down projection x 2; routed experts in groups of "
              f"{routed_group_size(plan.granularity, plan.shared_experts)}")
    print(f"  router ~ Normal(0, {plan.router_init_std:.4g}), seed {plan.seed}; expert down projections x {scale:g}; "
          f"drop ratio {plan.drop_ratio:g}, noise {plan.noise:g}")
    print(f"  aux-loss coef {target.aux_loss_coef:g}, z-loss coef {target.z_loss_coef:g}, "
          f"{target.router_loss_aggregation} over MoE layers (written to config.json)")
    rate = f", bias rate {target.balance_bias_rate:g} (expert biases start at zero)"
    print(f"  balance {target.balance}{rate if target.balance == 'aux_free' else ''}")
    print(f"  parameters: {total_parameters(source):,} dense -> {total_parameters(target):,} total, "
          f"{active_parameters(target):,} active")
    print(f"  writes {model_type}: {why}")
    upcycle_checkpoint(args.src, args.out, plan, overwrite=args.force, progress="upcycle",
                    command=args.command_line)
    print(f"wrote {args.out}")
    verify_if_asked(args)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "upcycle", help="turn a dense checkpoint into a Mixture of Experts (sparse upcycling)",
        description="Every dense MLP becomes E experts (copies, or 1/G slices with --granularity), routers "
                    "are drawn from Normal(0, std), everything else is copied. OUT is a mixtral or qwen2_moe "
                    "directory that transformers opens. With the default topk_softmax routing and no "
                    "--drop-ratio/--noise the output computes exactly what the source computes.")
    p.add_argument("src", help="dense source checkpoint directory (llama, mistral or qwen2)")
    p.add_argument("out", help="output directory (must not exist)")
    p.add_argument("--num-experts", type=positive_int, default=8, help="experts per MoE layer (default 8, the paper's)")
    p.add_argument("--top-k", type=positive_int, default=2, help="experts per token (default 2, the paper's)")
    p.add_argument("--granularity", type=positive_int, default=1,
                   help="G: each expert is a 1/G slice of the dense MLP; experts form virtual groups of G "
                        "(both --num-experts and --top-k count slices and must be multiples of G)")
    p.add_argument("--shared-experts", type=int, default=0,
                   help="N: the first N of the G slices become one always-on shared expert (Qwen2-MoE's, gated "
                        "by a sigmoid; DeepSeekMoE's shared experts) and the routed experts form groups of the "
                        "other G - N (--num-experts and --top-k must be multiples of G - N); needs "
                        "--granularity > N; written as qwen2_moe (default 0: none)")
    p.add_argument("--routing", choices=("topk_softmax", "softmax_topk"), default="topk_softmax",
                   help="topk_softmax (Mixtral: renormalised, exactly function-preserving) or softmax_topk "
                        "(He et al.: no renormalisation, close at init with weight scaling)")
    router = p.add_mutually_exclusive_group()
    router.add_argument("--router-init-std", type=non_negative_float, default=0.02,
                        help="std of the router's initial weights (default 0.02)")
    router.add_argument("--router-init-variance", type=non_negative_float, default=None,
                        help="the same as a variance; the AquilaMoE paper's words are 'variance 0.02' (std 0.141)")
    p.add_argument("--no-weight-scaling", action="store_true",
                   help="do not scale the experts' down projections (by G for topk_softmax, E*G/k for softmax_topk; "
                        "G - N in place of G with --shared-experts N, whose shared expert keeps its x 2)")
    p.add_argument("--drop-ratio", type=fraction, default=0.0,
                   help="Drop-Upcycling: fraction of each expert's intermediate units re-initialised (0 to 1)")
    p.add_argument("--noise", type=non_negative_float, default=0.0,
                   help="add Normal(0, NOISE * std of the dense weight) to every expert weight")
    p.add_argument("--every", type=positive_int, default=1,
                   help="upcycle layers i with (i+1) %% N == 0 only (Qwen2-MoE's decoder_sparse_step); default all")
    p.add_argument("--aux-loss-coef", type=non_negative_float, default=0.001, help="load-balancing loss weight")
    p.add_argument("--z-loss-coef", type=non_negative_float, default=0.01, help="router z-loss weight")
    p.add_argument("--router-loss-aggregation", choices=ROUTER_LOSS_AGGREGATIONS, default="mean",
                   help="how the MoE layers' load-balancing and z-losses combine: sum (Megatron's, AquilaMoE's: "
                        "each layer adds coef x its loss) or mean (default: 1/n_layers of that pressure)")
    p.add_argument("--balance", choices=BALANCES, default="aux_loss",
                   help="how the experts' load is kept even: aux_loss (the load-balancing loss, default), aux_free "
                        "(DeepSeek-V3: a per-expert routing bias moved after each step, no loss term) or none")
    p.add_argument("--balance-bias-rate", type=non_negative_float, default=0.001,
                   help="with --balance aux_free: how far each expert's bias moves per step (default 0.001, "
                        "DeepSeek-V3's)")
    p.add_argument("--seed", type=seed, default=0, help="seeds the routers, dropped units and noise")
    add_output_arguments(p)
    p.set_defaults(func=run)
