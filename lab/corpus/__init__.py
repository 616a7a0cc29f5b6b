"""The big training corpus: tens of millions of tokens in the shipped tokenizer's four domains.

    python -m lab data build --out data/tokens        # fetch, extract, split, tokenize, shard
    python -m lab data build --out DIR --check data/corpus-manifest.json

The shipped corpus (data/corpus.jsonl, 0.55M training tokens) is what the tests and the first launch
use; it is too small to pretrain a source without memorising it. This package builds a bigger one from
freely licensed text the package registries hold, and keeps everything the shipped corpus promises:
the same four domains, the same document-hash split (so every shipped document keeps its split), and
no training text that overlaps a validation document.

- `packages`: the raw sources (Debian packages, one npm package), fetched and unpacked reproducibly;
- `text`: plain text out of reStructuredText sections, Sphinx HTML and AsciiDoc;
- `documents`: the documents of each domain, with their source names;
- `decontaminate`: drops training documents that share a long n-gram with a validation document;
- `shards`: memory-mapped uint16 token shards and their manifest, written and read;
- `build`: the whole build, into a temporary sibling renamed at the end.
"""
