"""`python -m lab generate CKPT --prompt TEXT`: continue a prompt with a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.commands import non_negative_float, positive_int, probability, seed
from lab.errors import LabError, quoted
from lab.flops import total_parameters

ORDER = 20


def run(args: argparse.Namespace) -> None:
    import torch

    import lab

    from lab.checkpoint import read_config

    cfg, _ = read_config(args.path)  # the checkpoint's shape, before anything large is read
    tokenizer = None
    if args.prompt is not None:
        tokenizer_file = Path(args.path) / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise LabError(f"{args.path}: no tokenizer.json to encode --prompt; give token ids with --ids")
        from lab.data import load_tokenizer

        tokenizer = load_tokenizer(tokenizer_file)
        ids = tokenizer.encode(args.prompt).ids
    else:
        try:
            ids = [int(t) for t in args.ids.replace(",", " ").split()]
        except ValueError:
            raise LabError(f"--ids: expected integers separated by commas or spaces, got {quoted(args.ids)}") from None
    if not ids:
        raise LabError("the prompt is empty")
    if max(ids) >= cfg.vocab_size or min(ids) < 0:
        raise LabError(f"token ids must be in [0, {cfg.vocab_size}), got {max(ids) if max(ids) >= cfg.vocab_size else min(ids)}")
    if not args.no_resource_check:
        _check_memory(cfg, len(ids) + args.max_new_tokens)
    model = lab.load_pretrained(args.path)
    out = lab.generate(model, torch.tensor([ids]), args.max_new_tokens, temperature=args.temperature,
                       top_p=args.top_p, eos_token_id=model.config.extra.get("eos_token_id"),
                       generator=torch.Generator().manual_seed(args.seed))
    tokens = out[0].tolist()
    print(tokenizer.decode(tokens) if tokenizer else " ".join(map(str, tokens)))


def _check_memory(cfg, positions: int) -> None:
    """The weights and the KV cache, which is allocated whole for every position up front (lab.kv_cache)."""
    from lab.resources import check_memory

    itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}[cfg.dtype]
    cache = 2 * cfg.n_layers * cfg.n_kv_heads * positions * cfg.head_dim * itemsize
    check_memory(total_parameters(cfg) * itemsize + cache,
                 f"generating {positions:,} positions (weights and a KV cache of {cache / 1e9:.2f} GB)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="continue a prompt with a checkpoint",
                              description="Greedy decoding by default; --temperature > 0 samples (with --top-p).")
    p.add_argument("path", help="checkpoint directory")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text (needs tokenizer.json in the checkpoint directory)")
    prompt.add_argument("--ids", help="token ids, e.g. '1,5,9'")
    p.add_argument("--max-new-tokens", type=positive_int, default=40)
    p.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 means greedy (default)")
    p.add_argument("--top-p", type=probability, default=1.0, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--no-resource-check", action="store_true",
                   help="generate even when the weights and the KV cache look larger than the free memory")
    p.set_defaults(func=run)
