"""JSON the lab reads from disk (config.json, indexes, meta.json, metrics lines, state files), parsed safely.

Python's parser recurses once per nesting level: a few kilobytes of `[[[[...` end in a RecursionError
in the parser or, below its limit, in whatever walks the value next (a renderer, a copy, a hash). Every
value read here is therefore refused when it nests deeper than `MAX_DEPTH`, far beyond anything the
lab writes. Malformed content becomes a LabError that names the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lab.errors import LabError

# The lab's deepest file nests 5 levels (metrics: record -> tokens_per_expert_by_domain -> domain -> layer -> count).
MAX_DEPTH = 32


class JSONInputError(LabError, ValueError):
    """Content that is not the JSON the lab expects; the message names the file (and line)."""


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests containers more than `limit` deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return False


def loads(text: str | bytes, source: str, *, max_depth: int = MAX_DEPTH,
          error: type[LabError] = JSONInputError) -> Any:
    """The value of one JSON document, or a JSONInputError naming `source`.

    A cheap count of brackets skips the depth walk for the usual shallow document.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise error(f"{source}: nested deeper than {max_depth} levels") from None
    except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        raise error(f"{source}: not valid JSON ({getattr(e, 'msg', None) or str(e)[:100]})") from None
    brackets = text.count(b"[" if isinstance(text, bytes) else "[") + text.count(b"{" if isinstance(text, bytes) else "{")
    if brackets > max_depth and depth_exceeds(value, max_depth):
        raise error(f"{source}: nested deeper than {max_depth} levels")
    return value


def read_json(path: str | os.PathLike, *, expect: type | None = dict, max_bytes: int = 64 * 2**20,
              error: type[LabError] = JSONInputError) -> Any:
    """The JSON value in file `path`, which must be of type `expect` (an object, by default).

    Refuses a file larger than `max_bytes` (the lab's JSON files are small; an index of a large
    checkpoint is a few hundred kilobytes) before reading it.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {size:,} bytes, more than a JSON file of the lab holds ({max_bytes:,})")
        data = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror or e})") from None
    value = loads(data, str(path), error=error)
    if expect is not None and not isinstance(value, expect):
        kind = {dict: "a JSON object", list: "a JSON list"}.get(expect, expect.__name__)
        raise error(f"{path}: expected {kind}, got {type(value).__name__}")
    return value
