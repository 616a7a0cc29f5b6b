"""Training checkpoints: a Hugging Face directory plus the training state, written atomically.

Layout of a run directory's checkpoints:

    DIR/checkpoints/step-000040/   config.json, model.safetensors, tokenizer files  (a Hugging Face directory)
                                   training_state.safetensors  optimizer tensors ("optim/<param>/<key>")
                                                               and RNG states as uint8 ("rng/torch", "rng/cuda")
                                   training_state.json         step, tokens, next_batch (the data position),
                                                               recipe digest, world size, optimizer
                                                               hyper-parameters, Python's RNG state
    DIR/final/                     the model of the last step: a Hugging Face directory (hard links into
                                   its step checkpoint where the file system allows)

Nothing here is pickled. A checkpoint is built in a hidden sibling (`.step-000040.partial-<id>`) and
renamed to `step-000040` only once every file is written, so a `step-*` directory is always complete
(and must hold training_state.json, written last, to count). Hidden leftovers of a killed write are
ignored and removed on resume.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lab.checkpoint import write_lab_checkpoint
from lab.checkpoint.io import tokenizer_files
from lab.config import ModelConfig
from lab.json_input import read_json

CHECKPOINTS = "checkpoints"
FINAL = "final"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / STATE_JSON).is_file() and (path / STATE_TENSORS).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


# The hidden names the lab itself gives to what it is still writing in a run directory; nothing else there
# is touched (a user's `.git/` or `.venv/` stays).
# A partial checkpoint directory, or the temporary sibling the checkpoint writer fills before renaming it
# into place (lab.checkpoint.io.temporary_sibling: ".<name>.tmp-<pid>-<8 hex>"), which a SIGKILL in the
# middle of a write leaves behind.
_LEFTOVER_DIRS = re.compile(r"^\.\.?(?:step-\d{6,}|final)\.(?:partial|old)-[0-9a-f]{8}(?:\.tmp-\d+-[0-9a-f]{8})?$")
_LEFTOVER_FILES = re.compile(r"^\.(?:metrics\.jsonl|meta\.json|pipeline_state\.json)\.tmp$")


def remove_partial(run_dir: Path) -> list[Path]:
    """Remove the leftovers of the lab's own writes that never finished (a killed checkpoint write, a final/
    being replaced); returns what was removed. Call it only while holding the run's lock (lab.train.lock)."""
    removed = []
    for root in (Path(run_dir) / CHECKPOINTS, Path(run_dir)):
        if root.is_dir():
            for path in root.iterdir():
                if path.is_symlink():
                    continue
                if _LEFTOVER_DIRS.match(path.name) and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
                elif _LEFTOVER_FILES.match(path.name) and path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint `path` cannot be resumed from (one line), or None when it reads back whole: its
    state file, its training tensors' header and its model (config, tensors' shapes and values)."""
    from lab.checkpoint import load_pretrained
    from lab.errors import LabError

    try:
        scalars = read_json(Path(path) / STATE_JSON)
        for key in ("step", "tokens"):
            if not isinstance(scalars.get(key), int) or isinstance(scalars.get(key), bool):
                return f"{STATE_JSON}: {key} must be an integer"
        if not isinstance(scalars.get("param_groups"), list) or not isinstance(scalars.get("python_rng"), list):
            return f"{STATE_JSON}: param_groups and python_rng must be lists"
        with safe_open(str(Path(path) / STATE_TENSORS), framework="pt") as f:
            f.keys()
        load_pretrained(path)
    except LabError as e:
        return str(e)
    except Exception as e:  # safetensors' own error types for a truncated or corrupt file
        return f"{STATE_TENSORS}: {str(e)[:200]}"
    return None


def _rng_state() -> tuple[dict[str, torch.Tensor], list]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    return tensors, [version, list(internal), gauss]


def restore_rng(tensors: dict[str, torch.Tensor], python_state: list) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    return value


def save_checkpoint(run_dir: Path, step: int, cfg: ModelConfig, model_state: dict[str, torch.Tensor],
                    optim_state: dict, scalars: dict, tokenizer_dir: Path | None) -> Path:
    """Write checkpoint `step` (model, optimizer, RNG, `scalars`) atomically; returns its path.

    `model_state` holds the lab's parameter names (the whole model, on the CPU); `optim_state` is
    name-keyed, as `lab.distributed.full_optimizer_state` gives it.
    """
    target = checkpoint_dir(run_dir, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        extra = tokenizer_files(tokenizer_dir) if tokenizer_dir is not None else []
        # expert_bias: the aux-free routing biases are model state too (buffers), so a resume routes as before.
        write_lab_checkpoint(partial, cfg, lambda name, e: model_state[name] if e is None else model_state[name][e],
                             extra_files=extra, expert_bias=True)
        tensors, python_rng = _rng_state()
        for name, values in optim_state["state"].items():
            for key, value in values.items():
                tensors[f"optim/{name}/{key}"] = value.detach().cpu().contiguous()
        save_file(tensors, str(partial / STATE_TENSORS))
        groups = [{k: _jsonable(v) for k, v in group.items()} for group in optim_state["param_groups"]]
        state = {"format": 1, "step": step, **scalars, "param_groups": groups, "python_rng": python_rng}
        (partial / STATE_JSON).write_text(json.dumps(state) + "\n")  # last: its presence marks completion
        if target.exists():  # the same step written again (a resumed run that stops where it began)
            shutil.rmtree(target)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def load_state(path: Path) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(scalars, name-keyed optimizer state, RNG tensors) of a checkpoint directory."""
    scalars = read_json(Path(path) / STATE_JSON)
    tensors = load_file(str(Path(path) / STATE_TENSORS))
    state: dict[str, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            name, _, field = key[len("optim/"):].rpartition("/")
            state.setdefault(name, {})[field] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in scalars.pop("param_groups")]
    rng = {k: v for k, v in tensors.items() if k.startswith("rng/")}
    return scalars, {"state": state, "param_groups": groups}, rng


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints."""
    for _, path in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def publish_final(run_dir: Path, checkpoint: Path, readme: str | None = None) -> Path:
    """DIR/final: the Hugging Face part of `checkpoint`, hard-linked (copied where links fail), with its
    model card `readme` (README.md), atomically."""
    final = Path(run_dir) / FINAL
    tmp = Path(run_dir) / f".{FINAL}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if readme is not None:
            (tmp / "README.md").write_text(readme, encoding="utf-8")
        for src in checkpoint.iterdir():
            if src.name in (STATE_TENSORS, STATE_JSON) or not src.is_file() or (tmp / src.name).exists():
                continue
            try:
                os.link(src, tmp / src.name)
            except OSError:
                shutil.copyfile(src, tmp / src.name)
        old = None
        if final.exists():
            old = final.parent / f".{FINAL}.old-{uuid.uuid4().hex[:8]}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
