"""YAML recipes read safely: UTF-8 only, bounded in size, and without aliases.

PyYAML's safe loader still expands aliases: nine anchors of nine references each are a few hundred
bytes that become 9^9 values once anything walks them (a check, a hash, an error message), which
exhausts memory. Recipes have no use for anchors, so an alias is refused where it appears, with its
line. Malformed content becomes a LabError naming the file (and line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.json_input import MAX_DEPTH, depth_exceeds

MAX_BYTES = 2**20  # the largest shipped recipe is a few kilobytes


def _loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, f"the alias *{event.anchor[:40]} (YAML aliases are "
                                                  "not allowed in a recipe; write the values out)", event.start_mark)
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_yaml(path: str | os.PathLike, what: str = "recipe") -> Any:
    """The value of the YAML file `path` (a LabError naming the file for anything that is not plain YAML)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LabError(f"{path}: no such {what} file")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise LabError(f"{path}: {size:,} bytes, too large for a {what} (at most {MAX_BYTES:,})")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LabError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise LabError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        value = yaml.load(text, Loader=_loader())
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = str(getattr(e, "problem", None) or e)[:200]
        raise LabError(f"{path}: not valid YAML{line} ({problem})") from None
    except RecursionError:
        raise LabError(f"{path}: nested more than {MAX_DEPTH} levels deep") from None
    if depth_exceeds(value, MAX_DEPTH):
        raise LabError(f"{path}: nested more than {MAX_DEPTH} levels deep")
    return value
