"""Build the big corpus: documents from every source, split, decontaminated, tokenized into shards.

Steps, each deterministic given the sources' versions:
1. the shipped corpus's documents (data/corpus.jsonl, their splits as shipped), then every new
   source's documents (`lab.corpus.documents`), in Unicode NFC; an exact duplicate of an earlier
   document is dropped;
2. each new document's split from its name (`lab.data.split_of`, the shipped corpus's rule);
3. training documents sharing a long n-gram with a validation document are dropped (`decontaminate`);
4. per split and domain, documents in the order of a hash of their names (sources interleave),
   tokenized with the shipped tokenizer, joined with EOS, written as uint16 shards (`shards`);
5. `manifest.json` with every count and hash. All of it is written into a temporary sibling of OUT
   and renamed into place at the end: an interrupted build leaves no half-written corpus.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
import unicodedata
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from lab import data
from lab.checkpoint.io import check_output_dir, replace_dir
from lab.corpus import documents, packages, shards
from lab.corpus.decontaminate import NGRAMS, UNCHECKED_DOMAINS, contaminated

ENCODE_BATCH = 2_000


def _shipped_documents() -> list[dict]:
    return [{"domain": d.domain, "source": d.source, "text": d.text, "split": d.split}
            for d in data.load_documents(data.DEFAULT_CORPUS)]


def _new_documents(cache: Path, log) -> tuple[list[dict], list[dict]]:
    """(documents, the sources they came from with versions and licences)."""
    readers = {packages.PYTHON_DOC: documents.python_doc_documents,
               packages.SPHINX_DOC: documents.sphinx_doc_documents,
               packages.DJANGO_DOC: documents.django_doc_documents,
               packages.POSTGRESQL_DOC: documents.postgresql_doc_documents,
               packages.GIT_DOC: documents.git_doc_documents,
               packages.CHINESE_POETRY: documents.chinese_poetry_documents}
    docs, sources = [], []
    for package, read in readers.items():
        root, version = packages.fetch(package, cache)
        found = read(root, version)
        log(f"{package.name} {version}: {len(found)} documents")
        docs += found
        sources.append({"name": package.name, "registry": package.registry, "version": version,
                        "licence": package.licence, "what": package.what})
    stdlib = documents.stdlib_code_documents()
    arithmetic = documents.arithmetic_documents()
    python = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    log(f"cpython {python} standard library: {len(stdlib)} documents; arithmetic: {len(arithmetic)} documents")
    sources.append({"name": f"cpython-{python}", "registry": "the running Python", "version": python,
                    "licence": "PSF License Agreement",
                    "what": "the standard library's .py files of 0.5-200 kB, tests included"})
    sources.append({"name": "lab.corpus.arithmetic", "registry": "generated", "version": "1",
                    "licence": "generated here, no third-party rights",
                    "what": f"{len(arithmetic)} documents of {documents.LINES_PER_DOC} problems of the shipped kind"})
    return docs + stdlib + arithmetic, sources


def collect(cache: Path, log=print) -> tuple[list[dict], list[dict], Counter]:
    """(documents with their splits, sources, how many were dropped and why)."""
    new, sources = _new_documents(cache, log)
    dropped: Counter = Counter()
    seen, docs = set(), []
    for doc in _shipped_documents() + new:
        text = unicodedata.normalize("NFC", doc["text"])
        digest = hashlib.sha256(text.encode()).digest()
        if digest in seen:
            dropped[(doc["domain"], "duplicate")] += 1
            continue
        seen.add(digest)
        split = doc.get("split") or data.split_of(doc["domain"], doc["source"])
        docs.append({"domain": doc["domain"], "source": doc["source"], "text": text, "split": split})
    train = [d for d in docs if d["split"] == "train"]
    validation = [d for d in docs if d["split"] == "validation"]
    flags = contaminated(train, validation)
    for doc, flag in zip(train, flags):
        if flag:
            dropped[(doc["domain"], "overlaps validation")] += 1
    kept = [d for d, flag in zip(train, flags) if not flag] + validation
    return kept, sources, dropped


def _encode(texts: list[str], tokenizer, eos: int) -> np.ndarray:
    pieces = []
    for i in range(0, len(texts), ENCODE_BATCH):
        for encoding in tokenizer.encode_batch(texts[i:i + ENCODE_BATCH], add_special_tokens=False):
            pieces.append(np.asarray(encoding.ids + [eos], dtype=np.uint32))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint32)


def _order(doc: dict) -> str:
    return hashlib.sha256(doc["source"].encode()).hexdigest()


def write_corpus(out: Path, docs: list[dict], sources: list[dict], dropped: Counter, log=print) -> dict:
    tokenizer = data.load_tokenizer(data.DEFAULT_TOKENIZER)
    eos = data.eos_id(tokenizer)
    manifest = {
        "format": shards.FORMAT,
        "tokenizer": {"file": "tokenizer.json", "sha256": hashlib.sha256(data.DEFAULT_TOKENIZER.read_bytes()).hexdigest(),
                      "vocab_size": tokenizer.get_vocab_size(), "eos_id": eos},
        "dtype": "uint16",
        "shard_tokens": shards.SHARD_TOKENS,
        "rules": {"split": f"validation when sha256('<domain>/<source>') % 100 < {data.VALIDATION_PERCENT}",
                  "decontamination": "a training document sharing an n-gram with a validation document of its "
                                     f"domain is dropped; n per domain: {NGRAMS}; not applied to "
                                     f"{', '.join(UNCHECKED_DOMAINS)}",
                  "duplicates": "an exact duplicate of an earlier document is dropped"},
        "sources": [{"name": "data/corpus.jsonl", "registry": "shipped",
                     "sha256": hashlib.sha256(data.DEFAULT_CORPUS.read_bytes()).hexdigest()}] + sources,
        "splits": {},
    }
    domains = [d for d in data.DOMAINS if any(doc["domain"] == d for doc in docs)]
    for split in data.SPLITS:
        manifest["splits"][split] = {}
        for domain in domains:
            chosen = sorted((d for d in docs if d["split"] == split and d["domain"] == domain), key=_order)
            ids = _encode([d["text"] for d in chosen], tokenizer, eos)
            entry = {"documents": len(chosen), "bytes": sum(len(d["text"].encode()) for d in chosen),
                     "tokens": int(ids.size),
                     "dropped_duplicates": dropped[(domain, "duplicate")] if split == "train" else 0,
                     "dropped_overlapping_validation": dropped[(domain, "overlaps validation")] if split == "train" else 0,
                     "shards": shards.write_stream(out, split, domain, ids)}
            if split == "validation":
                del entry["dropped_duplicates"], entry["dropped_overlapping_validation"]
            manifest["splits"][split][domain] = entry
            log(f"{split:>10} {domain:>10}: {entry['documents']:>7} documents {entry['tokens']:>11,} tokens")
    manifest["totals"] = {split: sum(e["tokens"] for e in manifest["splits"][split].values()) for split in data.SPLITS}
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(data.DATA_DIR / name, out / name)  # the shards' ids mean something only with it
    shards.write_manifest(out, manifest)
    return manifest


def build(out: Path, cache: Path, *, overwrite: bool = False, log=print) -> dict:
    """Build the corpus into `out` (replaced only once the new one is complete); return its manifest."""
    out = check_output_dir(out, overwrite)
    started = time.monotonic()
    docs, sources, dropped = collect(cache, log)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        manifest = write_corpus(tmp, docs, sources, dropped, log)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{out}: {manifest['totals']['train']:,} training and {manifest['totals']['validation']:,} "
        f"validation tokens in {time.monotonic() - started:.0f} s")
    return manifest


def compare_manifests(built: dict, reference: dict) -> list[str]:
    """The shards whose hash or length differs, and those only one side has."""
    def shard_map(manifest):
        return {s["file"]: (s["sha256"], s["tokens"]) for split in manifest.get("splits", {}).values()
                for entry in split.values() for s in entry["shards"]}

    a, b = shard_map(built), shard_map(reference)
    return sorted(f for f in a.keys() | b.keys() if a.get(f) != b.get(f))
