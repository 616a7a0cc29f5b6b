"""Random draws that depend only on a seed and a name, never on the order in which they are made.

Growth maps and noise, router rows and Drop-Upcycling's re-drawn units each draw from their own
generator, keyed by what is drawn (`seeded_generator(seed, "router", layer)`): a tensor made alone,
streamed from a checkpoint or made with all the others in memory gets the same values.
"""

from __future__ import annotations

import hashlib

import torch


def seeded_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator whose state depends only on `seed` and `keys` (stable across runs and processes)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
