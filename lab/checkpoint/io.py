"""Hugging Face checkpoint directories in and out: config.json + safetensors, sharded with an index.

Reading is lazy (`safe_open`, one tensor at a time) and never unpickles anything; writing goes to a
temporary sibling directory that is renamed into place at the end, so a failure never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from lab.checkpoint.hf_config import config_from_hf, config_to_hf, hf_model_type
from lab.checkpoint.hf_names import filler_tensors, tensor_maps
from lab.checkpoint.safetensors_stream import TensorEntry, write_safetensors
from lab.config import ModelConfig
from lab.errors import CheckpointError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DTYPE_NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like '5GB', '200MB', '1GiB'."""
    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    text = size.strip().upper()
    for unit, factor in units.items():
        if text.endswith(unit) and text[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(text[: -len(unit)]) * factor)
    raise ValueError(f"not a size: {size!r} (examples: 5GB, 200MB)")


class SafetensorsReader:
    """The tensors of a checkpoint directory, by name, read one at a time from whichever file holds them."""

    def __init__(self, directory: Path):
        self.directory = directory
        index = directory / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
            files = sorted(set(weight_map.values()))
        elif (directory / SINGLE_FILE).is_file():
            files, weight_map = [SINGLE_FILE], None
        else:
            pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
            hint = (f" (found {pickled[0]}: pickled weights are never loaded; convert them to safetensors)"
                    if pickled else "")
            raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
        self._stack = ExitStack()
        self._handles = {}
        for name in files:
            path = directory / name
            if not path.is_file():
                raise CheckpointError(f"{path}: listed in {INDEX_FILE} but missing")
            try:
                self._handles[name] = self._stack.enter_context(safe_open(str(path), framework="pt"))
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        if weight_map is None:
            weight_map = {key: SINGLE_FILE for key in self._handles[SINGLE_FILE].keys()}
        self.weight_map: dict[str, str] = weight_map

    def __enter__(self) -> "SafetensorsReader":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _handle(self, key: str):
        if key not in self.weight_map:
            raise CheckpointError(f"{self.directory}: missing tensor {key!r}")
        return self._handles[self.weight_map[key]]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle(key).get_slice(key).get_shape())

    def dtype(self, key: str) -> str:
        raw = self._handle(key).get_slice(key).get_dtype()
        return _DTYPE_NAMES.get(raw, raw)

    def get(self, key: str, expected_shape: tuple[int, ...]) -> torch.Tensor:
        """The tensor `key`, after checking its shape against what the config implies."""
        shape = self.shape(key)
        if shape != tuple(expected_shape):
            raise CheckpointError(f"{self.directory / self.weight_map[key]}: tensor {key!r} has shape "
                                  f"{list(shape)}, config.json implies {list(expected_shape)}")
        return self._handle(key).get_tensor(key)


def read_config(path: str | os.PathLike) -> tuple[ModelConfig, str]:
    """The lab config and Hugging Face model type of a checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json (not a Hugging Face checkpoint directory)")
    try:
        d = json.loads(config_file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    return config_from_hf(d, str(config_file))


def load_pretrained(path: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
                    device: torch.device | str = "cpu", moe_dispatch: str | None = None):
    """The lab's model for a Hugging Face checkpoint directory (llama, mistral, qwen2, mixtral, qwen2_moe).

    The weights keep the checkpoint's dtype unless `dtype` is given. The model is built on the meta
    device and its parameters are the tensors read from disk, so memory holds one copy of the weights.
    """
    from lab.model import DecoderLM

    path = Path(path)
    cfg, model_type = read_config(path)
    with SafetensorsReader(path) as reader:
        stored = reader.dtype("model.embed_tokens.weight")
        target = str(dtype).removeprefix("torch.") if dtype is not None else stored
        changes = {"dtype": target}
        if moe_dispatch is not None:
            changes["moe_dispatch"] = moe_dispatch
        cfg = cfg.replace(**changes)
        with torch.device("meta"):
            model = DecoderLM(cfg)
        expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
        state = {}
        for tmap in tensor_maps(cfg, model_type):
            shape = expected[tmap.lab][1:] if tmap.stacked else expected[tmap.lab]
            tensors = [reader.get(key, shape) for key in tmap.hf]
            tensor = torch.stack(tensors) if tmap.stacked else tensors[0]
            state[tmap.lab] = tensor.to(device=device, dtype=getattr(torch, target))
        known = {key for tmap in tensor_maps(cfg, model_type) for key in tmap.hf}
        known |= set(filler_tensors(cfg, model_type)) | {"lm_head.weight"}
        unused = [key for key in reader.weight_map if key not in known and not _ignorable(key)]
    if unused:
        warnings.warn(f"{path}: {len(unused)} tensor(s) not used by the model, e.g. {unused[0]!r}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _ignorable(key: str) -> bool:
    # Qwen2-MoE keeps an (empty) shared expert even when the config says it has none.
    return ".shared_expert" in key or key.endswith("rotary_emb.inv_freq")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "generation_config.json")


def tokenizer_files(directory: str | os.PathLike) -> list[Path]:
    """The tokenizer (and generation config) files of a checkpoint directory, to copy along."""
    return [Path(directory) / name for name in TOKENIZER_FILES if (Path(directory) / name).is_file()]


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing non-empty output directory unless `overwrite` (call it before any work)."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and not any(path.iterdir())) and not overwrite:
        raise CheckpointError(f"{path}: already exists (choose another directory, or overwrite it explicitly)")
    return path


def write_checkpoint(path: str | os.PathLike, hf_config: dict, entries: list[TensorEntry], *,
                     max_shard_size: int | str = "5GB", overwrite: bool = False,
                     extra_files: list[Path] = (), progress: str | None = None) -> Path:
    """Write a Hugging Face checkpoint directory from tensors made one at a time.

    Each entry's tensor is made when its turn comes and dropped once written, so peak memory is the
    largest tensor. Above `max_shard_size` the tensors go to `model-0000i-of-0000n.safetensors` files
    with a `model.safetensors.index.json`. `extra_files` (tokenizer files) are copied along. All of it
    goes to a temporary sibling directory, renamed into place at the end: a failure leaves nothing.
    `progress` names a progress bar over the bytes written (None: no bar).
    """
    path = check_output_dir(path, overwrite)
    shards = _plan_shards(entries, parse_size(max_shard_size))
    names = ([SINGLE_FILE] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    total = sum(e.nbytes for e in entries)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        with tqdm(total=total, unit="B", unit_scale=True, desc=progress,
                  disable=True if progress is None else None) as bar:
            for name, shard in zip(names, shards):
                write_safetensors(tmp / name, shard, on_tensor=lambda e: bar.update(e.nbytes))
        if len(shards) > 1:
            weight_map = {e.name: name for name, shard in zip(names, shards) for e in shard}
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        for src in extra_files:
            shutil.copyfile(src, tmp / Path(src).name)
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def model_entries(model, cfg: ModelConfig, model_type: str) -> list[TensorEntry]:
    """The checkpoint tensors of a lab model under their Hugging Face names (one tensor per expert)."""
    from lab.checkpoint.streaming import lab_entries  # streaming builds on this module

    state = model.state_dict()

    def make(name: str, expert: int | None) -> torch.Tensor:
        return state[name] if expert is None else state[name][expert]

    return lab_entries(cfg, model_type, make, getattr(torch, cfg.dtype))


def save_pretrained(model, path: str | os.PathLike, *, max_shard_size: int | str = "5GB",
                    overwrite: bool = False, tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """Write `model` as a Hugging Face checkpoint directory that transformers opens.

    The model type follows from the config (`hf_model_type`), the dtype is the model's. Above
    `max_shard_size` the weights are sharded with an index; the tokenizer files found in
    `tokenizer_dir` are copied along. The write is atomic (see `write_checkpoint`); an existing
    non-empty `path` is replaced only with `overwrite`.
    """
    check_output_dir(path, overwrite)
    dtype = next(iter(model.state_dict().values())).dtype
    cfg = model.config.replace(dtype=str(dtype).removeprefix("torch."))
    model_type = hf_model_type(cfg)
    extra = tokenizer_files(tokenizer_dir) if tokenizer_dir is not None else []
    return write_checkpoint(path, config_to_hf(cfg, model_type), model_entries(model, cfg, model_type),
                            max_shard_size=max_shard_size, overwrite=overwrite, extra_files=extra)


def _plan_shards(entries: list[TensorEntry], limit: int) -> list[list[TensorEntry]]:
    """Group tensors, in order, into shards of at most `limit` bytes (a larger tensor gets its own)."""
    shards, current, size = [], [], 0
    for entry in entries:
        if current and size + entry.nbytes > limit:
            shards.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.nbytes
    shards.append(current)
    return shards


def replace_dir(new: Path, path: Path) -> None:
    """Move `new` to `path`; an existing `path` is moved aside first and removed only afterwards."""
    if not path.exists():
        new.rename(path)
        return
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    path.rename(old)
    new.rename(path)
    shutil.rmtree(old, ignore_errors=True)
