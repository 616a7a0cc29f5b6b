"""One module per `python -m lab` command.

Each module defines `ORDER` (its place in `--help`) and `add_parser(subparsers)`, which adds the
command's parser and sets `func` to a function of the parsed arguments. `lab.cli` finds the modules
here by itself, so adding a command means adding a file. Errors in the user's input are raised as
`lab.errors.LabError` and printed as one line.

The argument types below turn a bad value into argparse's one-line usage error.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lab.errors import LabError, quoted


# The largest integer an option takes: sizes and steps beyond it describe no machine (and a seed must fit
# torch's 64-bit generator).
LARGEST_INT = 2**63 - 1


def _integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {quoted(text)}") from None
    if abs(value) > LARGEST_INT:
        raise argparse.ArgumentTypeError(f"must be at most {LARGEST_INT}, got {quoted(text)}")
    return value


def positive_int(text: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {quoted(text)}")
    return value


def seed(text: str) -> int:
    """A seed: an integer in [0, 2**63)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {quoted(text)}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (`inf` and `nan` parse as floats, and would flow into weights and config.json)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {quoted(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {quoted(text)}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {quoted(text)}")
    return value


def probability(text: str) -> float:
    """A number in (0, 1]."""
    value = non_negative_float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {quoted(text)}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    value = non_negative_float(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {quoted(text)}")
    return value


def recipe_file(text: str) -> str:
    """--recipe: a recipe file, or the name of a shipped one (`tiny`, `efficientscale-tiny`: the file of
    that name in the shipped recipes/, which an installed package keeps where no user would look)."""
    from pathlib import Path

    from lab.paths import RECIPES_DIR

    if Path(text).expanduser().exists() or "/" in text or text.endswith((".yaml", ".yml", ".json")):
        return text
    shipped = RECIPES_DIR / f"{text}.yaml"
    return str(shipped) if shipped.is_file() else text


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--force, --verify and --verify-text: the options every checkpoint-to-checkpoint command shares."""
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--verify", action="store_true",
                        help="compare the output with the source: largest logit gap and both losses")
    parser.add_argument("--verify-text", metavar="TEXT",
                        help="verify on this text (implies --verify; default: the shipped corpus's validation "
                             "text when the source has a tokenizer.json)")
    parser.add_argument("--no-resource-check", action="store_true",
                        help="write even when OUT looks larger than the free disk, or its largest tensor than "
                             "the free memory")


def check_output_resources(args: argparse.Namespace, target, model_type: str) -> None:
    """Refuse an output that would not fit on the disk, or whose tensors would not fit in memory while
    they are made (a few at a time: the largest, its source and a working copy), unless
    --no-resource-check."""
    if args.no_resource_check:
        return
    from lab.checkpoint.hf_names import tensor_maps
    from lab.model import parameter_shapes
    from lab.resources import check_disk, check_memory

    itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}[target.dtype]
    shapes = parameter_shapes(target)
    total = sum(math.prod(s) for s in shapes.values()) * itemsize
    largest = max(math.prod(s[1:]) if tmap.stacked else math.prod(s)
                  for tmap in tensor_maps(target, model_type) for s in [shapes[tmap.lab]]) * itemsize
    check_disk(total, Path(args.out).absolute().parent, f"{args.out} ({model_type})")
    # Tensors are made in fp32 whatever the output's dtype: 4 bytes per value, about three at a time.
    check_memory(3 * largest * 4 // itemsize, f"the largest tensor of {args.out}")


def check_verify_request(args: argparse.Namespace) -> None:
    """Refuse a --verify-text that verification would refuse, before OUT is written (not after)."""
    if args.verify_text is None:
        return
    if not args.verify_text.strip():
        raise LabError("--verify-text: must not be empty (omit it to verify on the shipped validation text)")
    if not (Path(args.src) / "tokenizer.json").is_file():
        raise LabError(f"--verify-text: {args.src} has no tokenizer.json to encode the text with")


def verify_if_asked(args: argparse.Namespace) -> None:
    """Print the output's logit gap and losses against its source when --verify or --verify-text is given."""
    if args.verify or args.verify_text is not None:
        from lab.verify import verify_against_source

        print(verify_against_source(args.src, args.out, text=args.verify_text).format())
