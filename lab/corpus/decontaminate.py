"""Keep validation text out of training: drop training documents that share a long n-gram with it.

The split rule keeps a document out of both splits, but the same text often comes from two sources
(a poem in two anthologies, a section of the language reference that `help()` also shows, a file
copied between two folders). A training document is dropped when it shares an n-gram with any
validation document of its domain, the test GPT-3 used (13 words). Chinese has no spaces: its n-grams
are of 12 characters with punctuation and spaces removed (two lines and more of a poem). Code repeats
short idioms everywhere (13 identifiers in a row are a common `self.assertEqual` line), so its n-grams
are of 50 identifiers: a copied function, not a shared idiom. Arithmetic is
left alone: its lines are drawn at random from a small space, so repeats across the splits are the
domain itself, not leaked text.
"""

from __future__ import annotations

import hashlib
import re

# Units per n-gram: words, CJK characters for chinese, identifiers and numbers for code.
NGRAMS = {"english": 13, "chinese": 12, "code": 50}
DEFAULT_NGRAM = 13
UNCHECKED_DOMAINS = ("arithmetic",)

_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _units(domain: str, text: str) -> tuple[list[str], int]:
    n = NGRAMS.get(domain, DEFAULT_NGRAM)
    if domain == "chinese":
        return _CJK.findall(text), n
    return _WORD.findall(text.lower()), n


def ngram_keys(domain: str, text: str) -> set[bytes]:
    """8-byte digests of the text's n-grams (words, or CJK characters for Chinese)."""
    units, n = _units(domain, text)
    sep = "" if domain == "chinese" else " "
    return {hashlib.blake2b(sep.join(units[i:i + n]).encode(), digest_size=8).digest()
            for i in range(len(units) - n + 1)}


def contaminated(train: list[dict], validation: list[dict]) -> list[bool]:
    """For each training document: does it share an n-gram with a validation document of its domain?"""
    keys: dict[str, set[bytes]] = {}
    for doc in validation:
        if doc["domain"] not in UNCHECKED_DOMAINS:
            keys.setdefault(doc["domain"], set()).update(ngram_keys(doc["domain"], doc["text"]))
    flags = []
    for doc in train:
        seen = keys.get(doc["domain"])
        flags.append(bool(seen) and not seen.isdisjoint(ngram_keys(doc["domain"], doc["text"])))
    return flags
