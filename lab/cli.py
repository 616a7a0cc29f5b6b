"""`python -m lab COMMAND ...`: a thin layer that parses arguments and calls the library.

A mistake in the input (a bad path, a bad option value) ends with one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.errors import LabError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _top_p(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


# ---------------------------------------------------------------- info
def cmd_info(args: argparse.Namespace) -> None:
    from lab.checkpoint import read_config
    from lab.checkpoint.hf_config import hf_model_type

    cfg, model_type = read_config(args.path)
    info = {"model_type": model_type, "lab_writes_as": hf_model_type(cfg), **cfg.to_dict()}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")


# ---------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    import lab

    tokenizer = None
    tokenizer_file = Path(args.path) / "tokenizer.json"
    if args.prompt is not None:
        if not tokenizer_file.is_file():
            raise LabError(f"{args.path}: no tokenizer.json to encode --prompt; give token ids with --ids")
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        ids = tokenizer.encode(args.prompt).ids
    else:
        try:
            ids = [int(t) for t in args.ids.replace(",", " ").split()]
        except ValueError:
            raise LabError(f"--ids: expected integers separated by commas or spaces, got {args.ids!r}") from None
    if not ids:
        raise LabError("the prompt is empty")
    model = lab.load_pretrained(args.path)
    if max(ids) >= model.config.vocab_size or min(ids) < 0:
        raise LabError(f"token ids must be in [0, {model.config.vocab_size}), got {max(ids)}")
    generator = torch.Generator().manual_seed(args.seed)
    out = lab.generate(model, torch.tensor([ids]), args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, eos_token_id=model.config.extra.get("eos_token_id"), generator=generator)
    new = out[0, len(ids):].tolist()
    print(tokenizer.decode(ids + new) if tokenizer else " ".join(map(str, ids + new)))


# ---------------------------------------------------------------- bench
def cmd_bench(args: argparse.Namespace) -> None:
    from lab.bench import model_speed

    report = model_speed.run(tokens=args.tokens, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                             threads=args.threads, quick=args.quick)
    print(model_speed.format_report(report))
    if args.json:
        path = Path(args.json)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="EfficientScale Lab: grow dense decoders and upcycle them into Mixtures of Experts.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("info", help="describe a Hugging Face checkpoint directory",
                            description="Print the lab's view of a checkpoint's config.")
    p.add_argument("path", help="checkpoint directory (config.json + safetensors)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = commands.add_parser("generate", help="continue a prompt with a checkpoint",
                            description="Greedy decoding by default; --temperature > 0 samples (with --top-p).")
    p.add_argument("path", help="checkpoint directory")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text (needs tokenizer.json in the checkpoint directory)")
    prompt.add_argument("--ids", help="token ids, e.g. '1,5,9'")
    p.add_argument("--max-new-tokens", type=_positive_int, default=40)
    p.add_argument("--temperature", type=_non_negative_float, default=0.0, help="0 means greedy (default)")
    p.add_argument("--top-p", type=_top_p, default=1.0, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_generate)

    p = commands.add_parser("bench", help="benchmarks against the reference implementations",
                            description="Measure the lab against transformers in the same run.")
    bench = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    b = bench.add_parser("model", help="forward+backward of our model vs transformers' (Mixtral, Qwen2)")
    b.add_argument("--tokens", type=_positive_int, default=2048)
    b.add_argument("--batch", type=_positive_int, default=1)
    b.add_argument("--repeats", type=_positive_int, default=7)
    b.add_argument("--warmup", type=_positive_int, default=2)
    b.add_argument("--threads", type=_positive_int, default=2)
    b.add_argument("--quick", action="store_true", help="tiny shapes: checks that it runs, measures nothing")
    b.add_argument("--json", help="also write the report to this JSON file")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
