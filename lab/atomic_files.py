"""Files written whole or not at all: the content goes to a hidden temporary sibling, `.NAME.tmp`, which
is then renamed over the target (a rename within one directory is atomic on POSIX), so that a reader, or
a process killed mid-write, never meets half a file. A `.NAME.tmp` left by a killed process is replaced
by the next write, and the run directory's clean-up (lab.train.state.remove_partial) knows the name.
Every text or JSON file the lab writes goes through here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def temporary_name(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` through its temporary sibling; the temporary never outlives the call."""
    path = Path(path)
    temp = temporary_name(path)
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_json_atomically(path: str | os.PathLike, value: Any, *, default=None) -> None:
    """`value` as indented JSON (UTF-8, non-ASCII kept as is, a final newline), written atomically."""
    write_text_atomically(path, json.dumps(value, indent=2, ensure_ascii=False, default=default) + "\n")


def write_lines_atomically(path: str | os.PathLike, records) -> None:
    """JSON Lines: one compact JSON object per record, written atomically."""
    write_text_atomically(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
