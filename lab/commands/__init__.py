"""One module per `python -m lab` command.

Each module defines `ORDER` (its place in `--help`) and `add_parser(subparsers)`, which adds the
command's parser and sets `func` to a function of the parsed arguments. `lab.cli` finds the modules
here by itself, so adding a command means adding a file. Errors in the user's input are raised as
`lab.errors.LabError` and printed as one line.

The argument types below turn a bad value into argparse's one-line usage error.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A number in (0, 1]."""
    value = non_negative_float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--force, --verify and --verify-text: the options every checkpoint-to-checkpoint command shares."""
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--verify", action="store_true",
                        help="compare the output with the source: largest logit gap and both losses")
    parser.add_argument("--verify-text", metavar="TEXT",
                        help="verify on this text (implies --verify; default: the shipped corpus's validation "
                             "text when the source has a tokenizer.json)")


def verify_if_asked(args: argparse.Namespace) -> None:
    """Print the output's logit gap and losses against its source when --verify or --verify-text is given."""
    if args.verify or args.verify_text is not None:
        from lab.verify import verify_against_source

        print(verify_against_source(args.src, args.out, text=args.verify_text).format())


def parameter_count(cfg, active: bool = False) -> int:
    """Parameters of a model of config `cfg` (built on the meta device: no memory); `active` as in
    `DecoderLM.num_parameters`."""
    import torch

    from lab.model import DecoderLM

    with torch.device("meta"):
        return DecoderLM(cfg).num_parameters(active=active)
