"""`python -m lab data build --out DIR`: the big training corpus as memory-mapped token shards.

`--check MANIFEST` compares the build with a reference manifest (`data/corpus-manifest.json`) shard by
shard and exits 1 when any shard differs. `python -m lab data stats DIR` prints a built corpus's table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ORDER = 45
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "efficientscale-lab" / "corpus-sources"


def print_table(manifest: dict) -> None:
    print(f"{'split':<11}{'domain':<11}{'documents':>10}{'bytes':>14}{'tokens':>13}{'bytes/token':>12}")
    for split, domains in manifest["splits"].items():
        for domain, entry in domains.items():
            print(f"{split:<11}{domain:<11}{entry['documents']:>10,}{entry['bytes']:>14,}{entry['tokens']:>13,}"
                  f"{entry['bytes'] / max(entry['tokens'], 1):>12.2f}")
        print(f"{split:<11}{'all':<11}{sum(e['documents'] for e in domains.values()):>10,}"
              f"{sum(e['bytes'] for e in domains.values()):>14,}{sum(e['tokens'] for e in domains.values()):>13,}")


def build(args: argparse.Namespace) -> None:
    from lab.corpus.build import build as build_corpus, compare_manifests
    from lab.corpus.shards import read_manifest

    reference = None
    if args.check is not None:
        from lab.json_input import read_json

        reference = read_json(args.check)
    manifest = build_corpus(args.out, args.cache, overwrite=args.force,
                            log=(lambda *a: None) if args.quiet else lambda line: print(line, flush=True))
    if not args.quiet:
        print_table(read_manifest(args.out))
    if reference is not None:
        differ = compare_manifests(manifest, reference)
        if differ:
            print(f"{len(differ)} shards differ from {args.check}: {', '.join(differ)}", file=sys.stderr)
            raise SystemExit(1)
        print(f"identical to {args.check}: every shard's sha256")


def stats(args: argparse.Namespace) -> None:
    from lab.corpus.shards import read_manifest

    print_table(read_manifest(args.dir))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="build the big training corpus (token shards)",
                              description="The big training corpus: tens of millions of tokens in the four domains.")
    commands = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    b = commands.add_parser("build", help="fetch the sources, tokenize, write shards and manifest.json",
                            description="Build the corpus into --out (data/README.md lists the sources).")
    b.add_argument("--out", type=Path, required=True, help="output folder (written whole, or not at all)")
    b.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help=f"where fetched packages are kept between builds (default: {DEFAULT_CACHE})")
    b.add_argument("--check", type=Path, metavar="MANIFEST",
                   help="compare every shard's sha256 with this manifest (data/corpus-manifest.json); exit 1 if any differs")
    b.add_argument("--force", action="store_true", help="replace an existing --out (only once the new one is complete)")
    b.add_argument("--quiet", action="store_true", help="print nothing but errors")
    b.set_defaults(func=build)
    s = commands.add_parser("stats", help="print a built corpus's documents and tokens per split and domain")
    s.add_argument("dir", type=Path, help="a folder written by data build")
    s.set_defaults(func=stats)
