"""Each distinct tensor made once: a memo keyed by what a tensor depends on.

A derived model repeats tensors: depth growth by interpolation places each source layer twice in a row,
upcycling writes one dense MLP as E identical experts. A rule says what each tensor depends on (its key:
equal keys, equal tensors); the writer knows every tensor it will ask for and in which order, so a made
tensor is kept until the last tensor that repeats it and dropped then. Kept tensors stay within a byte
budget, about the largest tensors: over it, the kept tensor needed farthest ahead is dropped (or the new
one not kept) and made again when its turn comes, the same values. The values never depend on the order
tensors are asked in; only how often one is made does.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Hashable, Sequence

import torch


def repeat_budget(sizes: Sequence[int]) -> int:
    """The memo's byte budget for tensors of `sizes` bytes: twice the largest. That holds one decoder layer's
    weights while interpolation repeats it whenever they add up to at most two of the largest tensor (the
    embedding, in the benchmark's 776M-parameter growth: a layer of 88 MB against 2 x 64 MB). The streaming
    writer asks for a file's tensors smallest first (`making_order`), so there a repeat mostly comes right
    after its original and the memo holds far less; the budget bounds any order."""
    return 2 * max(sizes, default=0)


class RepeatMemo:
    """`get(i, make)`: the tensor asked for `i`-th, made by `make` unless an earlier one of the same key was
    kept. `keys[i]` is the key of the `i`-th tensor asked for. Callers must not modify what they get."""

    def __init__(self, keys: Sequence[Hashable], budget: int | None = None):
        self._keys = list(keys)
        self._uses: dict[Hashable, deque[int]] = {}
        for i, key in enumerate(self._keys):
            self._uses.setdefault(key, deque()).append(i)
        self._kept: dict[Hashable, torch.Tensor] = {}
        self._kept_bytes = 0
        self.budget = budget  # None: no bound (the in-memory derivation holds the whole model anyway)
        self.made = 0  # how many tensors `make` was called for

    def get(self, i: int, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = self._keys[i]
        uses = self._uses[key]
        while uses and uses[0] <= i:
            uses.popleft()
        tensor = self._kept.pop(key, None)
        if tensor is None:
            tensor = make()
            self.made += 1
        else:
            self._kept_bytes -= _held_bytes(tensor)
        if uses:
            self._keep(key, tensor)
        return tensor

    def _keep(self, key: Hashable, tensor: torch.Tensor) -> None:
        size = _held_bytes(tensor)
        while self.budget is not None and self._kept_bytes + size > self.budget:
            farthest = max(self._kept, key=lambda k: self._uses[k][0], default=None)
            if farthest is None or self._uses[farthest][0] < self._uses[key][0]:
                return  # the new tensor is the one needed farthest ahead: made again then
            self._kept_bytes -= _held_bytes(self._kept.pop(farthest))
        self._kept[key] = tensor
        self._kept_bytes += size


def _held_bytes(tensor: torch.Tensor) -> int:
    """The memory a kept tensor holds on to: all of its storage, a view keeps the whole."""
    return tensor.untyped_storage().nbytes()
