"""The shipped corpus, its tokenizer, and the token batches training and evaluation read.

The corpus (data/corpus.jsonl, built by data/build_corpus.py) holds documents of four domains, each
labelled with its domain and its split. `load_tokens` encodes a split into one token stream per domain,
every document followed by `<|endoftext|>`. Training batches are a pure function of (seed, step): the
rows of a step are random windows of the train stream drawn from a generator seeded by both, so
resuming needs no iterator state, and `world_size` processes see exactly the rows one process sees.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lab.errors import LabError
from lab import paths

DATA_DIR = paths.DATA_DIR
DEFAULT_CORPUS = DATA_DIR / "corpus.jsonl"
DEFAULT_TOKENIZER = DATA_DIR / "tokenizer.json"
DOMAINS: tuple[str, ...] = ("english", "chinese", "code", "arithmetic")
SPLITS: tuple[str, ...] = ("train", "validation")
EOS_TOKEN = "<|endoftext|>"
# A document is in the validation split when the hash of its name falls below this share of the range.
VALIDATION_PERCENT = 8
# Where a domain's sample prompt stops: "37 + 85 =" asks the model for the sum.
PROMPT_STOPS = {"arithmetic": "="}


@dataclass(frozen=True)
class Document:
    domain: str
    split: str
    text: str
    source: str


def split_of(domain: str, source: str) -> str:
    """The split of a document, from its domain and source name alone (the same in every corpus build).

    A function of the name only: deterministic, and a document never changes split when others are
    added or removed, so the shipped corpus's validation documents stay validation in the big corpus.
    """
    digest = hashlib.sha256(f"{domain}/{source}".encode()).hexdigest()
    return "validation" if int(digest, 16) % 100 < VALIDATION_PERCENT else "train"


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise LabError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def load_documents(path: str | os.PathLike | None = None, split: str | None = None) -> list[Document]:
    """The corpus's documents in file order (those of `split` only, when given)."""
    _check_split(split)
    path = Path(path) if path is not None else DEFAULT_CORPUS
    if not path.is_file():
        raise LabError(f"{path}: no such corpus file (build the shipped one with: python data/build_corpus.py)")
    try:
        # JSON escapes newlines inside strings, so records are exactly the "\n"-separated lines.
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise LabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    docs = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            doc = Document(domain=record["domain"], split=record["split"], text=record["text"],
                           source=record.get("source", f"{path.name}:{lineno}"))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise LabError(f"{path}:{lineno}: not a corpus record ({type(e).__name__}: {e})") from None
        if doc.split not in SPLITS or not isinstance(doc.text, str) or not isinstance(doc.domain, str):
            raise LabError(f"{path}:{lineno}: split must be train or validation, domain and text strings")
        if split is None or doc.split == split:
            docs.append(doc)
    if not docs:
        raise LabError(f"{path}: no documents" + (f" in the {split} split" if split else ""))
    return docs


def load_tokenizer(path: str | os.PathLike | None = None):
    """A `tokenizers.Tokenizer` from a tokenizer.json file, or from a folder (a checkpoint) holding one."""
    from tokenizers import Tokenizer

    path = Path(path) if path is not None else DEFAULT_TOKENIZER
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise LabError(f"{path}: no such tokenizer file")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust library raises its own exception type for a malformed file
        raise LabError(f"{path}: not a tokenizer.json ({e})") from None


def eos_id(tokenizer) -> int:
    """The id of `<|endoftext|>`, which ends every document."""
    token_id = tokenizer.token_to_id(EOS_TOKEN)
    if token_id is None:
        raise LabError(f"the tokenizer has no {EOS_TOKEN} token")
    return token_id


def _as_tokenizer(tokenizer):
    return tokenizer if hasattr(tokenizer, "encode_batch") else load_tokenizer(tokenizer)


def encode_documents(docs: list[Document], tokenizer, eos: int | None = None) -> torch.Tensor:
    """The documents encoded and joined into one 1-D int64 tensor, each followed by `eos` (when given)."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch([d.text for d in docs], add_special_tokens=False):
        ids.extend(encoding.ids)
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.int64)


def _encode_split(split: str, corpus, tokenizer, eos: int | None) -> dict[str, torch.Tensor]:
    _check_split(split)
    if split is None:
        raise LabError(f"split must be one of {', '.join(SPLITS)}")
    docs = load_documents(corpus, split)
    present = {d.domain for d in docs}
    order = [d for d in DOMAINS if d in present] + sorted(present - set(DOMAINS))
    return {domain: encode_documents([d for d in docs if d.domain == domain], tokenizer, eos) for domain in order}


def load_tokens(split: str, *, corpus: str | os.PathLike | None = None, tokenizer=None) -> dict[str, torch.Tensor]:
    """Per domain, one 1-D int64 tensor: the split's documents encoded and joined, each followed by EOS.

    `tokenizer` is a `tokenizers.Tokenizer`, a path to one, or None for the shipped one. Domains come
    in DOMAINS order, then any other domain of the corpus in sorted order. Encoding the whole corpus
    takes about a second (the Rust tokenizer, in batches), so nothing is cached.
    """
    tokenizer = _as_tokenizer(tokenizer)
    return _encode_split(split, corpus, tokenizer, eos_id(tokenizer))


def chosen_domains(available, wanted) -> list[str]:
    """The domains a run trains on, in the order of `available` (the training data's): all of them when
    `wanted` is None (a recipe's `data.domains`), else those named, each of which must be there."""
    available = list(available)
    if wanted is None:
        return available
    unknown = [d for d in wanted if d not in available]
    if unknown:
        raise LabError(f"recipe data.domains: {unknown[0]!r} is not a domain of the training data "
                       f"(it has {', '.join(available)})")
    return [d for d in available if d in wanted]


def _step_seed(seed: int, step: int) -> int:
    """A 63-bit generator seed from (seed, step): neighbouring steps get unrelated streams."""
    digest = hashlib.sha256(f"lab.data/{seed}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class TrainBatches:
    """Random windows of `seq_len` tokens from the train streams of all domains, joined in order.

    `batch(step, rank, world_size)` is a pure function of (seed, step, rank, world_size): the global
    batch of `batch_size` rows of a step is the same whatever `world_size` is, and rank r gets its rows
    r::world_size. Labels are the input ids themselves (the model shifts them).
    """

    def __init__(self, tokens, seq_len: int, batch_size: int, seed: int = 0):
        """`tokens`: per domain, a 1-D tensor; or one memory-mapped stream (`lab.corpus.shards.ShardedStream`)."""
        if seq_len <= 0 or batch_size <= 0:
            raise LabError(f"seq_len and batch_size must be positive, got {seq_len} and {batch_size}")
        if isinstance(tokens, dict):
            if not tokens:
                raise LabError("no train tokens")
            self.stream = torch.cat([t.to(torch.int64).reshape(-1) for t in tokens.values()])
        else:
            self.stream = tokens  # read window by window: the corpus never becomes one int64 tensor
        if self.n_tokens < seq_len:
            raise LabError(f"seq_len {seq_len} is longer than the train stream ({self.n_tokens} tokens)")
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed

    @property
    def n_tokens(self) -> int:
        return self.stream.numel() if isinstance(self.stream, torch.Tensor) else len(self.stream)

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """(batch_size // world_size, seq_len) int64 input ids for this step and rank."""
        if world_size <= 0 or self.batch_size % world_size:
            raise LabError(f"batch_size {self.batch_size} must be divisible by world_size {world_size}")
        if not 0 <= rank < world_size:
            raise LabError(f"rank must be in [0, {world_size}), got {rank}")
        generator = torch.Generator().manual_seed(_step_seed(self.seed, step))
        starts = torch.randint(0, self.n_tokens - self.seq_len + 1, (self.batch_size,), generator=generator)
        starts = starts[rank::world_size]  # the global batch is drawn whole, then sliced
        if not isinstance(self.stream, torch.Tensor):
            rows = [self.stream.window(int(start), self.seq_len) for start in starts]
            return torch.from_numpy(np.stack(rows).astype(np.int64))  # (batch_size // world_size, seq_len)
        offsets = torch.arange(self.seq_len)
        return self.stream[starts[:, None] + offsets]  # (batch_size // world_size, seq_len)


def validation_batches(tokens: dict[str, torch.Tensor], seq_len: int, max_sequences: int = 8) -> dict[str, torch.Tensor]:
    """Per domain, (n, seq_len) fixed, non-overlapping windows from the start of its validation stream.

    n = min(max_sequences, stream length // seq_len); the same windows at every evaluation, so
    validation losses of different runs and stages compare.
    """
    out = {}
    for domain, stream in tokens.items():
        n = min(max_sequences, stream.numel() // seq_len)
        if n == 0:
            raise LabError(f"seq_len {seq_len} is longer than the {domain} validation stream ({stream.numel()} tokens)")
        out[domain] = stream[: n * seq_len].reshape(n, seq_len).to(torch.int64)
    return out


def validation_windows(seq_len: int, per_domain: int | None = None, *, tokens: dict[str, torch.Tensor] | None = None,
                       tokenizer=None) -> dict[str, torch.Tensor]:
    """Per domain, (n, seq_len) fixed windows from the start of the validation stream: the shipped split
    encoded with `tokenizer` (None: the shipped one), or `tokens` already encoded. `per_domain` None takes
    every whole window. The one way lessons, pages, experiments and model cards choose validation text."""
    if tokens is None:
        tokens = load_tokens("validation", tokenizer=tokenizer)
    limit = per_domain if per_domain is not None else max(t.numel() for t in tokens.values())
    return validation_batches(tokens, seq_len, limit)


def validation_token_sample(tokenizer, n_sequences: int, seq_len: int) -> torch.Tensor:
    """(n_sequences, seq_len) validation windows of the shipped corpus, taking the domains in turn.

    The corpus is encoded with `tokenizer` (a checkpoint's own, to compare models on real text).
    """
    tokenizer = _as_tokenizer(tokenizer)
    # A checkpoint's own tokenizer may lack the lab's EOS token: its documents are then simply joined.
    tokens = _encode_split("validation", None, tokenizer, tokenizer.token_to_id(EOS_TOKEN))
    long_enough = {domain: stream for domain, stream in tokens.items() if stream.numel() >= seq_len}
    per_domain = validation_batches(long_enough, seq_len, max_sequences=n_sequences)
    rows = [windows[i] for i in range(n_sequences) for windows in per_domain.values() if i < len(windows)]
    if len(rows) < n_sequences:
        raise LabError(f"the validation text holds only {len(rows)} windows of {seq_len} tokens, "
                       f"{n_sequences} were asked for")
    return torch.stack(rows[:n_sequences])


def domain_prompts(corpus: str | os.PathLike | None = None) -> dict[str, str]:
    """A short prompt per domain, the opening of its first validation document, for samples in training.

    Arithmetic prompts stop after the first "=" (PROMPT_STOPS), so a sample shows whether the model computes.
    """
    prompts = {}
    for doc in load_documents(corpus, "validation"):
        lines = [line for line in doc.text.split("\n") if line.strip()]
        if doc.domain in prompts or not lines:
            continue
        stop = PROMPT_STOPS.get(doc.domain)
        if stop is not None and stop in lines[0]:
            prompt = lines[0][: lines[0].index(stop) + len(stop)]
        else:
            # One line, or two when the first is only a title: enough context, still short.
            prompt = "\n".join(lines[:2]) if len(lines[0]) < 20 and len(lines) > 1 else lines[0]
            prompt = prompt[:80]
        prompts[doc.domain] = prompt
    return prompts


def corpus_stats(corpus: str | os.PathLike | None = None, tokenizer=None) -> list[dict]:
    """Per domain and split: documents, UTF-8 bytes, tokens (without EOS) and bytes per token."""
    tokenizer = _as_tokenizer(tokenizer)
    rows = []
    docs = load_documents(corpus)
    domains = [d for d in DOMAINS if any(doc.domain == d for doc in docs)]
    domains += sorted({doc.domain for doc in docs} - set(domains))
    for domain in domains:
        for split in SPLITS:
            texts = [d.text for d in docs if d.domain == domain and d.split == split]
            n_bytes = sum(len(t.encode("utf-8")) for t in texts)
            n_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))
            rows.append({"domain": domain, "split": split, "documents": len(texts), "bytes": n_bytes,
                         "tokens": n_tokens, "bytes_per_token": n_bytes / n_tokens if n_tokens else 0.0})
    return rows
