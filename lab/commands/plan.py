"""`python -m lab plan --recipe R --gpus N --gpu h100`: memory per GPU, the parallel layout, traffic and time
per step of a training or pipeline recipe on a cluster (lab.planner), or why it does not fit."""

from __future__ import annotations

import argparse
import dataclasses
import json

from lab.commands import positive_int, recipe_file

ORDER = 72


def run(args: argparse.Namespace) -> None:
    from lab.errors import LabError
    from lab.planner import GPUS, describe, plan, workloads

    gpu = GPUS[args.gpu]
    works = workloads(args.recipe)
    plans, refusals = [], []
    for work in works:
        try:
            plans.append(plan(work, args.gpus, gpu, per_node=args.gpus_per_node))
        except LabError as e:
            refusals.append(str(e))
    if args.json:
        print(json.dumps({"gpus": args.gpus, "gpu": gpu.name, "plans": [
            {"name": p.workload.name, "shard_group": p.shard_group, "replicas": p.replicas,
             "expert_parallel": p.expert_parallel, "micro_batch": p.micro_batch, "grad_accum": p.grad_accum,
             "activation_checkpointing": p.checkpointing, "global_sequences": p.global_sequences,
             "memory_bytes": p.memory, "traffic_bytes": p.traffic, "step_s": p.step_s, "mfu": p.mfu,
             "config": dataclasses.asdict(p.workload.config)} for p in plans], "refused": refusals}, indent=2,
            default=str))
    else:
        print(f"{args.recipe} on {args.gpus} x {gpu.name} ({args.gpus_per_node} per node); an estimate from the "
              "data sheets (lab/planner.py says how), not a measurement")
        for p in plans:
            print("\n".join(describe(p)))
    if refusals:
        raise LabError(refusals[0] + (f" (and {len(refusals) - 1} more stage(s))" if len(refusals) > 1 else ""))


def add_parser(subparsers) -> None:
    from lab.planner import GPUS

    p = subparsers.add_parser(
        "plan", help="memory, layout, traffic and time per step of a recipe on a GPU cluster",
        description="Plan a training or pipeline recipe on N GPUs: parameters (total and active), memory per GPU "
                    "(weights, gradients, AdamW state, gathered blocks, activations), the FSDP2/HSDP layout, "
                    "expert parallelism, micro-batch and gradient accumulation, traffic per step, estimated "
                    "time per step and MFU. Exit code 2 with the reason when a stage does not fit.")
    p.add_argument("--recipe", required=True, type=recipe_file,
                   help="a training recipe or a pipeline recipe (YAML), or the name of a shipped one")
    p.add_argument("--gpus", type=positive_int, required=True, help="how many GPUs")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="the GPU (default h100)")
    p.add_argument("--gpus-per-node", type=positive_int, default=8, help="GPUs per node (default 8)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
