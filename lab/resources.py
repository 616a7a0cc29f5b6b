"""Memory and disk estimates made before a large allocation or write, so that a request for far more
than the machine has ends in one clear line (with the flag that overrides it) instead of an
out-of-memory kill or a full disk hours later."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lab.errors import LabError

OVERRIDE_FLAG = "--no-resource-check"


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux's MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system that would hold `path` (its nearest existing ancestor's)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _size(n: float) -> str:
    for unit, factor in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def check_memory(needed: int, what: str) -> None:
    """Refuse when `needed` bytes exceed the memory available now."""
    have = available_memory()
    if have is not None and needed > have:
        raise LabError(f"{what} needs about {_size(needed)} of memory, {_size(have)} is available "
                       f"({OVERRIDE_FLAG} to try anyway)")


def check_disk(needed: int, where: str | os.PathLike, what: str) -> None:
    """Refuse when `needed` bytes exceed the free space where `where` would be written."""
    have = free_disk(where)
    if have is not None and needed > have:
        raise LabError(f"{what} needs about {_size(needed)} of disk at {where}, {_size(have)} is free "
                       f"({OVERRIDE_FLAG} to try anyway)")
