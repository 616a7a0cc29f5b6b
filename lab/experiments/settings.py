"""The settings of a seeded experiment: one frozen dataclass per experiment, overridable from the command
line, recorded in OUT/settings.json, and compared on every later call.

Every experiment's settings start with the fields of `CommonSettings` (the source checkpoint, the
training data, the batch and the evaluation windows); each adds its own. A value given on the command
line as text (`--set steps=400`, `--set baseline_lrs=1e-3,2e-3,4e-3`, `--set n_layers=none`) is read as
the field's type and checked against the field's rule, so a mistake fails as one LabError line naming
the key before any work.

Paths (`source`, `tokens`) are stored relative to the repository when they lie inside it, so that an
experiment directory names no directory of the machine that wrote it; they are resolved against the
repository again when used.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import LabError
from lab.field_rules import non_negative, one_of, positive, rule  # noqa: F401 (the experiments import them from here)
from lab import paths
from lab.atomic_files import write_json_atomically

ROOT = paths.ROOT
# The dense source every experiment starts from (a shipped source, `python -m lab sources list`), and the
# corpus it was pretrained on: continued training stays on the source's own distribution.
DEFAULT_SOURCE = "data/sources/source-deep"
DEFAULT_TOKENS = "data/tokens"
SETTINGS_FILE = "settings.json"
PATH_FIELDS = ("source", "tokens", "corpus")


@dataclass(frozen=True)
class CommonSettings:
    """What every experiment shares: where the source and the data are, and how runs train and evaluate."""

    source: str = DEFAULT_SOURCE
    # A memory-mapped token directory for the recipes' `data.tokens` (None: the shipped corpus's train split).
    tokens: str | None = DEFAULT_TOKENS
    # A corpus JSONL in the shipped corpus's format (None: data/corpus.jsonl); the validation windows come
    # from its validation split.
    corpus: str | None = None
    seq_len: int = field(default=128, metadata=positive())
    batch_size: int = field(default=16, metadata=positive())
    # Validation windows per domain, the same windows for every run of the experiment (lab.data.validation_batches:
    # the first ones of each domain's validation stream). At 128 tokens the shipped validation split holds 82-109
    # windows per domain, so the default takes all of them: a claim is judged on the whole split, not on the
    # first two or three documents of each domain.
    eval_sequences: int = field(default=128, metadata=positive())
    # Evaluations per training run besides the one before its first step (each one reads the whole split).
    evaluations: int = field(default=5, metadata=positive())
    # How often a training run checkpoints (and so where an interrupted one resumes).
    checkpoint_every: int = field(default=100, metadata=positive())

    def check(self) -> None:
        """Rules across fields (each experiment adds its own); raises LabError."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def path(self, name: str) -> Path | None:
        """A path field as a path on this machine (relative ones lie inside the repository)."""
        value = getattr(self, name)
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() else ROOT / path


def stored_path(value: str) -> str:
    """`value` (relative to the current directory) as settings keep it: relative to the repository when
    inside it, else absolute."""
    path = Path(value).expanduser().resolve()
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _parse(text: str, kind: Any, key: str) -> Any:
    """Command-line text as a value of type `kind` (int, float, str, bool, X | None, tuple[float, ...])."""
    if _is_optional(kind):
        if text.strip().lower() in ("none", "null", ""):
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_parse(part.strip(), item, key) for part in text.split(",") if part.strip())
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        word = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise LabError(f"setting {key}: must be {word}, got {text!r}") from None
    return text


def _is_optional(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)


def _is_text(kind: Any) -> bool:
    return kind is str or (_is_optional(kind) and str in typing.get_args(kind))


def _check_rules(settings) -> None:
    for f in dataclasses.fields(settings):
        check = f.metadata.get("rule")
        value = getattr(settings, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if check is not None and value is not None and not all(check[0](v) for v in values):
            raise LabError(f"setting {f.name}: {check[1]}, got {value!r}")


def make_settings(cls, overrides: dict[str, str | Any] | None = None):
    """Settings of class `cls`: its defaults with `overrides` (values, or text to parse) applied and checked."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise LabError(f"setting {key}: unknown (known: {', '.join(known)})")
        if isinstance(value, list):  # a tuple, as settings.json stores it
            value = tuple(value)
        if isinstance(value, str) and not _is_text(hints[key]):
            value = _parse(value, hints[key], key)
        elif isinstance(value, str) and _is_optional(hints[key]) and value.strip().lower() in ("none", "null"):
            value = None
        if key in PATH_FIELDS and value is not None:
            value = stored_path(str(value))
        values[key] = value
    settings = cls(**values)
    _check_rules(settings)
    settings.check()
    return settings


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """`["steps=400", "lr=1e-3"]` as {"steps": "400", "lr": "1e-3"}."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LabError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def describe(cls) -> list[tuple[str, str, Any]]:
    """(name, type, default) of every setting of `cls`, for `python -m lab experiments list`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        name = str(kind).replace("typing.", "") if typing.get_args(kind) else kind.__name__
        rows.append((f.name, name, f.default))
    return rows


def record_settings(out: Path, experiment: str, settings) -> None:
    """Write OUT/settings.json, or check that the one there says the same (a resume under other settings
    would mix two experiments in one directory)."""
    path = Path(out) / SETTINGS_FILE
    current = json.loads(json.dumps({"experiment": experiment, "settings": settings.to_dict()}))
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise LabError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(stored, dict):
            raise LabError(f"{path}: not a settings file")
        if stored.get("experiment") != experiment:
            raise LabError(f"{out}: holds experiment {stored.get('experiment')!r}, not {experiment!r}; "
                           "choose another --out")
        old = stored.get("settings") or {}
        changed = [f"{k} {old.get(k)!r} there, {v!r} now" for k, v in current["settings"].items() if old.get(k) != v]
        changed += [f"{k} {old[k]!r} there, unknown now" for k in old if k not in current["settings"]]
        if changed:
            raise LabError(f"{out}: was started with other settings ({'; '.join(changed)}); resume it with the "
                           "same settings, or choose another --out")
        return
    if Path(out).exists() and any(Path(out).iterdir()):
        raise LabError(f"{out}: exists, is not empty and holds no {SETTINGS_FILE}; choose another --out")
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, current)


def read_settings(out: Path) -> dict:
    """OUT/settings.json ({"experiment", "settings"}), or a LabError saying what OUT is not."""
    path = Path(out) / SETTINGS_FILE
    if not Path(out).is_dir():
        raise LabError(f"{out}: not a directory")
    if not path.is_file():
        raise LabError(f"{out}: not an experiment directory (no {SETTINGS_FILE})")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LabError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("experiment"), str):
        raise LabError(f"{path}: names no experiment")
    return stored
