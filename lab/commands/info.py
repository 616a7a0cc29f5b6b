"""`python -m lab info CKPT`: the lab's view of a checkpoint's config."""

from __future__ import annotations

import argparse
import json

ORDER = 10


def run(args: argparse.Namespace) -> None:
    from lab.checkpoint import hf_model_type, read_config

    cfg, model_type = read_config(args.path)
    info = {"model_type": model_type, "lab_writes_as": hf_model_type(cfg), **cfg.to_dict()}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a Hugging Face checkpoint directory",
                              description="Print the lab's view of a checkpoint's config.")
    p.add_argument("path", help="checkpoint directory (config.json + safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
