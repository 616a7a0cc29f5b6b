"""Freed host memory kept in the process's heap for the next tensors, instead of going back to the system.

Why: glibc's malloc serves a block above its mmap threshold (128 KiB at first, raised as such blocks are
freed, to 32 MiB at most) with fresh pages from the kernel and gives them back as soon as it is freed,
and trims its heap whenever more than twice that is free at the top. Work that makes and frees tensors of
a few sizes over and over then pays, for every new tensor, the kernel faulting in and zeroing its pages one
by one (on a virtual machine that reports free memory to its host, the host does it again):

- a CPU training step frees and remakes the same activations each step (the logits and their gradient are
  2048 x 4096 fp32 = 32 MiB at recipes/tiny.yaml's sizes): `torch.zeros(2048, 4096)` measured 17 ms on
  fresh pages against 1 ms from reused memory, and the whole tiny step on one thread 300 ms against 195 ms;
- a streamed growth or upcycling makes, writes and frees tensors hundreds of times: on the growth
  benchmark that was most of the time (2.7x the copy of the output's bytes against 1.7x with memory kept).

With the thresholds raised, blocks up to 1 GiB come from the heap and stay there once freed, as a caching
allocator (CUDA's) keeps them. Only where memory comes from changes, never what is computed (results are
bit for bit the same). Two scopes:

- `keep_freed_memory()`: for the rest of the process (training: the process keeps its peak heap);
- `with reuse_freed_memory():` for a block of work (a derivation run from a longer-lived process): at its
  end the heap's free memory is handed back (`malloc_trim`) and the thresholds go back to 32 MiB and
  64 MiB, the values glibc's own rule reaches once a 32 MiB block has been freed (the rule itself cannot be
  switched back on), unless `keep_freed_memory()` was called, which stays in force.

With another C library than glibc both do nothing.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from typing import Iterator

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEPT = 1 << 30  # blocks up to this size come from the heap, and this much may stay free in it
_GLIBC_MMAP_MAX = 32 << 20  # the largest mmap threshold glibc's dynamic rule sets (64-bit), and what
_GLIBC_TRIM_MAX = 64 << 20  # it sets the trim threshold to then

_process_wide: list[bool] = []  # [True] once keep_freed_memory() has taken effect


def _glibc():
    """The C library's malloc controls when it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version, libc.mallopt, libc.malloc_trim  # glibc only (musl has a mallopt that does nothing)
    except (OSError, AttributeError):
        return None
    return libc


def _keep(libc) -> None:
    if not libc.mallopt(_M_MMAP_THRESHOLD, KEPT):  # refused above 32 MiB by some versions: larger blocks
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_MAX)  # then still go back at once
    libc.mallopt(_M_TRIM_THRESHOLD, KEPT)


def keep_freed_memory() -> bool:
    """Keep freed blocks in the heap for the rest of the process; whether it took effect (glibc only)."""
    libc = _glibc()
    if libc is None:
        return False
    _keep(libc)
    if not _process_wide:
        _process_wide.append(True)
    return True


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Keep what is freed inside the block in the heap for reuse; hand it back at the end (see the module)."""
    libc = _glibc()
    if libc is None:
        yield
        return
    _keep(libc)
    try:
        yield
    finally:
        if not _process_wide:
            libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_MAX)
        libc.malloc_trim(0)
