"""Training checkpoints: the model, the optimizer state, the RNG and the data position, written atomically.

Layout of a run directory's checkpoints. A checkpoint written by one process:

    DIR/checkpoints/step-000040/   config.json, model.safetensors, tokenizer files  (a Hugging Face directory)
                                   training_state.safetensors  optimizer tensors ("optim/<param>/<key>")
                                                               and RNG states as uint8 ("rng/torch", "rng/cuda")
                                   training_state.json         step, tokens, next_batch (the data position),
                                                               recipe digest, world size, optimizer
                                                               hyper-parameters, Python's RNG state

A checkpoint written by N > 1 processes (torchrun) is sharded: nothing is gathered on one process.

    DIR/checkpoints/step-000040/   config.json, tokenizer files
                                   shards/shard-0000<r>-model-00001-of-00001.safetensors
                                                               process r-1's shards of the model ("model/<name>")
                                                               and of the optimizer ("optim/<param>/<key>"),
                                                               written by that process (torch.distributed.checkpoint,
                                                               lab.train.sharded_checkpoint)
                                   training_state.safetensors  the RNG states only
                                   training_state.json         as above (param_groups: the optimizer's
                                                               hyper-parameters, keyed by parameter name)

    DIR/final/                     the model of the last step: a Hugging Face directory (hard links into its
                                   step checkpoint on one process; streamed one gathered tensor at a time from
                                   the sharded model under torchrun)

Any number of processes resumes either kind: a whole checkpoint is read row by row into each process's
shard (lab.train.setup.load_shards) and its optimizer state set from the whole; a sharded one is read by
DCP, which reshards N processes' pieces onto M (so 2 -> 1, 1 -> 2 and 2 -> 2 all resume exactly).

Nothing here is pickled, and nothing is unpickled on reading: safetensors and JSON only (DCP's pickled
`.metadata` is never written; its reader rebuilds the layout from the shards' JSON headers).

Completeness: a checkpoint is built in a hidden sibling (`.step-000040.partial-<8 hex>`, one name shared by
every process) and renamed to `step-000040` by rank 0 only once every file is written: under torchrun after
every process has written its shards (DCP's save completes on each process only once all have), then the
state files, training_state.json last. So a `step-*` directory is always complete (and must hold
training_state.json and training_state.safetensors to count); a process killed mid-save leaves only the
hidden sibling, the previous checkpoint stays the newest complete one, and the leftover is removed on resume.

On one process a save is synchronous. Under torchrun the shards are written in the background
(`dcp.async_save`, from a copy of the state taken when the save starts) while training goes on; the
checkpoint completes (`PendingCheckpoint.finish`: state files, rename) before the next save starts, before a
stop or the final export, and after an error if its shards all reached the disk.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lab import distributed
from lab.checkpoint import hf_model_type, write_lab_checkpoint
from lab.checkpoint.hf_config import config_to_hf
from lab.checkpoint.io import tokenizer_files
from lab.config import ModelConfig
from lab.distributed import DistInfo
from lab.json_input import read_json
from lab.train.sharded_checkpoint import (ShardWriter, has_shards, load_optimizer_shards, shards_problem,
                                          write_hf_streaming)

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
        if has_shards(path):
            from lab.checkpoint import read_config

            problem = shards_problem(path, read_config(path)[0])
            if problem is not None:
                return problem
        else:
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


def _optimizer_groups(param_groups: list[dict]) -> list[dict]:
    return [{k: _jsonable(v) for k, v in group.items()} for group in param_groups]


def _write_state_files(directory: Path, step: int, scalars: dict, param_groups: list[dict],
                       optim_tensors: dict[str, torch.Tensor], rng: tuple[dict, list] | None = None) -> None:
    """training_state.safetensors (`optim_tensors` and the RNG: `rng` as `_rng_state` gave it, or now), then
    training_state.json: written last, its presence marks the checkpoint complete."""
    tensors, python_rng = rng if rng is not None else _rng_state()
    tensors = {**tensors, **optim_tensors}
    save_file(tensors, str(directory / STATE_TENSORS))
    state = {"format": 1, "step": step, **scalars, "param_groups": _optimizer_groups(param_groups),
             "python_rng": python_rng}
    (directory / STATE_JSON).write_text(json.dumps(state) + "\n")


def _rename_into_place(partial: Path, target: Path) -> None:
    if target.exists():  # the same step written again (a resumed run that stops where it began)
        shutil.rmtree(target)
    partial.rename(target)


def _shared_partial_id(info: DistInfo) -> str:
    """8 hex digits, drawn by rank 0 and the same on every process: the name of the hidden directory they fill."""
    token = torch.tensor([uuid.uuid4().int & 0xFFFFFFFF if info.is_main else 0], dtype=torch.int64,
                         device=info.device)  # nccl broadcasts device tensors only
    if info.sharded:
        torch.distributed.broadcast(token, src=0)
    return f"{int(token.item()):08x}"


@dataclass
class PendingCheckpoint:
    """A sharded checkpoint whose shards are being written in the background (`start_sharded_checkpoint`).
    Everything else it will hold was taken when it started: step, scalars, RNG, optimizer hyper-parameters.
    Until `finish` renames it, it is a hidden directory that no resume reads."""

    future: Future
    partial: Path
    target: Path
    step: int
    cfg: ModelConfig
    scalars: dict
    param_groups: list[dict]
    rng: tuple[dict, list]
    tokenizer_dir: Path | None

    def finish(self, info: DistInfo) -> Path:
        """Wait for the shards; then rank 0 writes the config, tokenizer and state files and renames the
        checkpoint into place. Every process calls it; no collective (the future completes on a process only
        once every process has written its file), so it is safe on an error path too. Returns the path."""
        try:
            self.future.result()
            if info.is_main:
                cfg = self.cfg
                (self.partial / "config.json").write_text(json.dumps(config_to_hf(cfg, hf_model_type(cfg)), indent=2)
                                                          + "\n")
                for src in tokenizer_files(self.tokenizer_dir) if self.tokenizer_dir is not None else []:
                    shutil.copyfile(src, self.partial / Path(src).name)
                _write_state_files(self.partial, self.step, self.scalars, self.param_groups, {}, self.rng)
                _rename_into_place(self.partial, self.target)
        except BaseException:
            if info.is_main:  # rank 0 owns the directory; the others' files go with it
                shutil.rmtree(self.partial, ignore_errors=True)
            raise
        return self.target


def start_sharded_checkpoint(run_dir: Path, step: int, cfg: ModelConfig, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, scalars: dict, tokenizer_dir: Path | None,
                             info: DistInfo, writer: ShardWriter) -> PendingCheckpoint:
    """Begin checkpoint `step` of a model sharded over the processes; every process calls it.

    Each process writes its own shards of the model and the optimizer state (no gather), in the background
    (`writer`); training may go on at once. Call `finish` on the result before the next checkpoint starts
    and before the run ends.
    """
    target = checkpoint_dir(run_dir, step)
    partial = target.parent / f".{target.name}.partial-{_shared_partial_id(info)}"
    if info.is_main:
        partial.mkdir(parents=True, exist_ok=True)  # exist_ok: another process's writer may have made it
    try:
        future, param_groups = writer.start(partial, model, optimizer)
    except BaseException:
        if info.is_main:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    return PendingCheckpoint(future, partial, target, step, cfg, dict(scalars), param_groups, _rng_state(),
                             tokenizer_dir)


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
        optim_tensors = {f"optim/{name}/{key}": value.detach().cpu().contiguous()
                         for name, values in optim_state["state"].items() for key, value in values.items()}
        _write_state_files(partial, step, scalars, optim_state["param_groups"], optim_tensors)
        _rename_into_place(partial, target)
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


def resume_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                          info: DistInfo) -> dict:
    """Load checkpoint `path`'s optimizer state into `optimizer` (each process its shard, whatever the number
    of processes that wrote it) and restore the RNG; returns its scalars (step, tokens, ...). Every process
    calls it. The model's weights are read when it is built (lab.train.setup)."""
    scalars, optim_state, rng = load_state(path)
    if has_shards(path):
        load_optimizer_shards(model, optimizer, path, optim_state["param_groups"])
    else:
        distributed.load_optimizer_state(model, optimizer, optim_state, info)
    restore_rng(rng, scalars["python_rng"])
    return scalars


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints."""
    for _, path in complete_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _install_final(run_dir: Path, tmp: Path) -> Path:
    """Move the finished directory `tmp` to DIR/final; an existing final/ is moved aside first and removed after."""
    final = Path(run_dir) / FINAL
    old = None
    if final.exists():
        old = final.parent / f".{FINAL}.old-{uuid.uuid4().hex[:8]}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def publish_final(run_dir: Path, checkpoint: Path, readme: str | None = None) -> Path:
    """DIR/final: the Hugging Face part of `checkpoint`, hard-linked (copied where links fail), with its
    model card `readme` (README.md), atomically."""
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
        return _install_final(run_dir, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_final(run_dir: Path, model: torch.nn.Module, cfg: ModelConfig, tokenizer_dir: Path | None,
                 readme: str | None, info: DistInfo) -> Path:
    """DIR/final from a model sharded over the processes, atomically; every process calls it.

    The model is gathered one tensor at a time and rank 0 streams each into the safetensors files
    (`write_hf_streaming`): no process holds the whole model. The files equal `publish_final`'s.
    """
    tmp = Path(run_dir) / f".{FINAL}.partial-{uuid.uuid4().hex[:8]}" if info.is_main else None
    try:
        extra = tokenizer_files(tokenizer_dir) if tokenizer_dir is not None else []
        write_hf_streaming(tmp, model, cfg, extra_files=extra, readme=readme)
        return _install_final(run_dir, tmp) if info.is_main else Path(run_dir) / FINAL
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
