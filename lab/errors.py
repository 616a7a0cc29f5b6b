"""Errors that describe a user's mistake: the command line prints their message as one line."""

from __future__ import annotations

# A bad value is quoted in an error message up to this many characters: enough to recognise it, never
# enough to flood a terminal (a value can be megabytes long: a YAML alias expanded, a pasted file).
QUOTE_LIMIT = 60


class LabError(Exception):
    """A problem with the user's input (a path, a file, an option), not a bug in the lab."""


class RecipeError(LabError):
    """A mistake in a recipe, at `key` (dotted: "optim.lr"; "" for the recipe as a whole). The message is
    "recipe KEY: DETAIL"; a caller that nests recipes (a pipeline's stages) re-keys it from `key` and
    `detail`, never by reading the message back."""

    def __init__(self, key: str, detail: str):
        self.key, self.detail = key, detail
        super().__init__(f"recipe {key}: {detail}" if key else f"recipe: {detail}")


class CheckpointError(LabError, ValueError):
    """A directory that is not a checkpoint the lab can read or write; the message names the file or tensor."""


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` cut to `limit` characters (with how much was left out), on one line.

    Containers are cut before they are fully rendered, so a huge or deeply nested value costs no more
    than its prefix.
    """
    if isinstance(value, (dict, list, tuple, set)):
        text = _shallow_repr(value, limit + 1)
    else:
        try:
            text = repr(value)
        except RecursionError:
            text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({type(value).__name__}, cut)"


def _shallow_repr(value: object, budget: int) -> str:
    """A repr of a container that stops once `budget` characters are written (nesting shown as '...')."""
    parts: list[str] = []
    size = 0
    if isinstance(value, dict):
        items = (f"{k!r:.{budget}}: {_leaf(v, budget)}" for k, v in value.items())
        opening, closing = "{", "}"
    else:
        items = (_leaf(v, budget) for v in value)
        opening, closing = {list: ("[", "]"), tuple: ("(", ")")}.get(type(value), ("{", "}"))
    for item in items:
        parts.append(item)
        size += len(item) + 2
        if size > budget:
            break
    if isinstance(value, tuple) and len(value) == 1:
        return f"({parts[0]},)"  # as Python writes a one-element tuple
    if isinstance(value, set) and not value:
        return "set()"
    return opening + ", ".join(parts) + closing


def _leaf(value: object, budget: int) -> str:
    if isinstance(value, dict):
        return "{...}" if value else "{}"
    if isinstance(value, (list, tuple, set)):
        return "[...]" if value else "[]"
    return repr(value)[:budget]
