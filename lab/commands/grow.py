"""`python -m lab grow SRC OUT --method {fpi,aki,aki-pro,msg}`: Scale-Up of a dense checkpoint."""

from __future__ import annotations

import argparse
import warnings

from lab.commands import (add_output_arguments, check_output_resources, check_verify_request,
                          non_negative_float, positive_int, seed, verify_if_asked)
from lab.flops import total_parameters
from lab.growth import DEPTH_KINDS, MAP_KINDS, METHODS, PLACEMENTS
from lab.growth.plan import MSG_RAMP_STEPS

ORDER = 30


def _shape(cfg) -> str:
    heads = f"{cfg.n_heads} heads" + (f" / {cfg.n_kv_heads} kv" if cfg.n_kv_heads != cfg.n_heads else "")
    return f"{cfg.n_layers} layers, dim {cfg.dim}, {heads}, head_dim {cfg.head_dim}, ffn_dim {cfg.ffn_dim}"


def _order(plan) -> str:
    from lab.growth import layer_order

    order = layer_order(plan.source.n_layers, plan.target.n_layers, plan.depth, plan.placement)
    text = ",".join(map(str, order[:16])) + (",..." if len(order) > 16 else "")
    where = f", placement {plan.placement}" if plan.depth == "identity" else ""
    return f"depth {plan.depth}{where} (source layers {text})" if plan.target.n_layers > plan.source.n_layers else "depth kept"


def run(args: argparse.Namespace) -> None:
    from lab.checkpoint import read_config
    from lab.checkpoint.io import check_output_dir
    from lab.growth import plan_growth
    from lab.derive import grow_checkpoint

    check_output_dir(args.out, args.force, inputs=(args.src,))
    check_verify_request(args)
    source, model_type = read_config(args.src)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = plan_growth(source, method=args.method, dim=args.hidden_size, ffn_dim=args.intermediate_size,
                           n_layers=args.num_layers, n_heads=args.num_heads, n_kv_heads=args.num_kv_heads,
                           depth=args.depth, map=args.map, noise=args.noise, seed=args.seed,
                           placement=args.placement, ramp_steps=args.ramp_steps)
    for w in caught:
        print(f"warning: {w.message}")
    t = plan.target
    heads = ("q heads grow inside each kv group" if plan.grouped_heads and t.n_heads > source.n_heads
             else "kv heads grow with the heads" if t.n_heads > source.n_heads else "heads kept")
    check_output_resources(args, plan.target.replace(dtype=source.dtype), model_type)
    print(f"grow {args.src} ({model_type}, {_shape(source)}) -> {args.out}")
    print(f"  target: {_shape(t)} ({heads})")
    print(f"  method {plan.method}, {_order(plan)}, map {plan.map}, noise {plan.noise:g}, seed {plan.seed}")
    print(f"  parameters: {total_parameters(source):,} -> {total_parameters(t):,}")
    print(f"  function-preserving: {'yes' if plan.is_exact else 'no'}; writes {model_type}")
    if plan.method == "msg":
        print(f"  msg: new units masked, masks ramp 0 -> 1 over the first {plan.ramp_steps} training steps, then fold "
              "into the weights (train OUT with the lab: until then transformers would ignore the masks)")
    grow_checkpoint(args.src, args.out, plan, overwrite=args.force, progress="grow",
                    command=args.command_line)
    print(f"wrote {args.out}")
    verify_if_asked(args)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "grow", help="grow a dense checkpoint wider and deeper (FPI, AKI, AKI-Pro)",
        description="Scale-Up (AquilaMoE): initialise a bigger dense model from a smaller one. Dimensions not "
                    "given keep the source's; head_dim is kept. FPI with the cyclic map and an integer hidden "
                    "ratio (any intermediate size, any head count) and --depth identity keeps the source's "
                    "function exactly. OUT keeps the source's model type and tokenizer files.")
    p.add_argument("src", help="dense source checkpoint directory (llama, mistral or qwen2)")
    p.add_argument("out", help="output directory (must not exist, unless --force)")
    p.add_argument("--method", choices=METHODS, default="fpi",
                   help="fpi: copies, function-preserving; aki: new units from layer l+1 (MHA only); aki-pro: "
                        "AKI with the GQA rule and interpolation depth (the paper's); msg: masked structural growth, "
                        "random new units behind masks that ramp from 0 (function-preserving) to 1")
    p.add_argument("--hidden-size", type=positive_int, help="target hidden size (dim)")
    p.add_argument("--intermediate-size", type=positive_int, help="target MLP intermediate size (ffn_dim)")
    p.add_argument("--num-layers", type=positive_int, help="target number of layers")
    p.add_argument("--num-heads", type=positive_int, help="target number of attention (q) heads")
    p.add_argument("--num-kv-heads", type=positive_int,
                   help="target kv heads: a GQA source keeps its groups; an MHA source grows them with the heads")
    p.add_argument("--depth", choices=DEPTH_KINDS,
                   help="layer order when --num-layers grows: stack (l mod L1), interpolate (floor(l*L1/L2)), "
                        "identity (interpolate with the inserted copies' o/down zeroed: exact); default "
                        "interpolate for aki-pro, stack otherwise")
    p.add_argument("--placement", choices=PLACEMENTS, default="first",
                   help="with --depth identity: each new block copies and follows the first layer of its group "
                        "(the interpolation order) or the last (LLaMA-Pro's block expansion)")
    p.add_argument("--map", choices=MAP_KINDS, default="cyclic",
                   help="which old unit a new unit copies: cyclic (i mod old, exact for integer ratios) or "
                        "random (bert2BERT, seeded)")
    p.add_argument("--noise", type=non_negative_float, default=0.0,
                   help="symmetric noise on the split copies, relative to each weight's std (keeps the function)")
    p.add_argument("--seed", type=seed, default=0, help="seeds the random map and the noise (msg: the new weights)")
    p.add_argument("--ramp-steps", type=positive_int,
                   help=f"with --method msg: training steps over which the masks ramp from 0 to 1 "
                        f"(default {MSG_RAMP_STEPS})")
    add_output_arguments(p)
    p.set_defaults(func=run)
