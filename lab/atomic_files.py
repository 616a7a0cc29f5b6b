"""Files written whole or not at all: the content goes to a hidden temporary sibling, which is then
renamed over the target (a rename within one directory is atomic on POSIX), so that a reader, or a
process killed mid-write, never meets half a file."""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` through a temporary sibling; the temporary never outlives the call."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
