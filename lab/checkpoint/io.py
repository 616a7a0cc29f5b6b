"""Hugging Face checkpoint directories in and out: config.json + safetensors, sharded with an index.

Reading is lazy (`safe_open`, one tensor at a time) and never unpickles anything; writing goes to a
temporary sibling directory that is renamed into place at the end, so a failure never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import re
import shutil
import struct
import uuid
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from lab.checkpoint.hf_config import config_from_hf
from lab.checkpoint.memo import RepeatMemo, repeat_budget
from lab.checkpoint.safetensors_stream import TensorEntry, making_order, write_safetensors
from lab.config import ModelConfig
from lab.errors import CheckpointError, quoted
from lab.json_input import read_json

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_DTYPE_NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
# The most file bytes `SafetensorsReader.read_box_into` buffers at a time when it cannot read in place
# (another dtype, or a box of some columns only): small against any model, large enough that the reads
# stay few.
READ_CHUNK_BYTES = 4 * 2**20


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
            weight_map = _read_weight_map(index)
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
        self._data: dict[str, tuple[io.FileIO, dict, int]] = {}  # file name -> (file, header, where data begins)
        for name in files:
            path = directory / name
            if not path.is_file():
                raise CheckpointError(f"{path}: listed in {INDEX_FILE} but missing")
            try:
                self._handles[name] = self._stack.enter_context(safe_open(str(path), framework="pt"))
            except Exception as e:  # safetensors raises its own error types for corrupt headers
                raise CheckpointError(f"{path}: not a readable safetensors file ({str(e)[:200]})") from None
            file = self._stack.enter_context(io.FileIO(path, "r"))
            self._data[name] = (file, *_header(file))
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
        """The tensor's dtype name; only the weight dtypes the lab computes in (F32, BF16, F16) are accepted."""
        raw = self._handle(key).get_slice(key).get_dtype()
        if raw not in _DTYPE_NAMES:
            raise CheckpointError(f"{self.directory / self.weight_map[key]}: tensor {key!r} has dtype {quoted(raw)} "
                                  f"(weights must be one of {', '.join(_DTYPE_NAMES)})")
        return _DTYPE_NAMES[raw]

    def get(self, key: str, expected_shape: tuple[int, ...], *, finite: bool = True) -> torch.Tensor:
        """The tensor `key`, after checking its shape against what the config implies and (with `finite`)
        that it holds no NaN or infinity: a model that computes NaN from its first step is a broken
        file, not a learning rate to tune."""
        shape = self._checked_shape(key, expected_shape)
        tensor = self._read(key, shape, getattr(torch, self.dtype(key)), 0, shape[0] if shape else 1)
        if finite:
            self._check_finite(key, tensor)
        return tensor

    def get_rows(self, key: str, expected_shape: tuple[int, ...], start: int, stop: int) -> torch.Tensor:
        """Rows `start:stop` of the tensor `key` (its first dimension), read from the file without the rest:
        what one process of a sharded run owns. Checked as `get` checks the whole tensor."""
        shape = self._checked_shape(key, expected_shape)
        start, stop = max(0, start), min(stop, shape[0])
        tensor = self._read(key, shape, getattr(torch, self.dtype(key)), start, max(start, stop))
        self._check_finite(key, tensor)
        return tensor

    def read_box_into(self, key: str, expected_shape: tuple[int, ...], out: torch.Tensor, box: tuple[slice, ...],
                      *, chunk_bytes: int = READ_CHUNK_BYTES) -> torch.Tensor:
        """Fill `out` with `tensor(key)[box]` (`box`: one slice of step 1 per dimension, `out` of the box's
        shape, any dtype), reading from the file only the rows `box[0]` spans. Checked as `get` checks the
        whole tensor; returns `out`.

        Invariant: at most `chunk_bytes` of the file's bytes (or one row, if larger) are held besides
        `out` at any time, so a process filling its shard of a model needs memory for that shard and
        one chunk, never for a whole tensor. When the box covers whole rows of a tensor stored in
        `out`'s dtype, the bytes are read straight into `out` with no buffer at all."""
        shape = self._checked_shape(key, expected_shape)
        if len(box) != len(shape) or out.shape != tuple(len(range(n)[s]) for s, n in zip(box, shape)):
            raise ValueError(f"{key}: box {box} of shape {list(shape)} does not match out {list(out.shape)}")
        if not shape:
            out.copy_(self.get(key, shape))
            return out
        dtype = getattr(torch, self.dtype(key))
        rows, rest = range(shape[0])[box[0]], box[1:]
        if rows.step != 1:
            raise ValueError(f"{key}: a box's slices must have step 1, got {box[0]}")
        whole_rows = all(range(n)[s] == range(n) for s, n in zip(rest, shape[1:]))
        if whole_rows and out.dtype == dtype and out.is_contiguous() and out.device.type == "cpu":
            if out.numel():
                read_into(self._data[self.weight_map[key]][0], out, self._offset(key, shape, dtype, rows.start))
        else:
            row = max(1, math.prod(shape[1:]) * dtype.itemsize)
            step = max(1, chunk_bytes // row)
            for first in range(rows.start, rows.stop, step):
                last = min(first + step, rows.stop)
                chunk = self._read(key, shape, dtype, first, last)
                # copy_ converts the dtype in place: no second buffer of `out`'s dtype.
                out[first - rows.start:last - rows.start].copy_(chunk[(slice(None), *rest)])
                del chunk  # freed before the next chunk is read: one chunk alive at a time
        self._check_finite(key, out)
        return out

    def _checked_shape(self, key: str, expected_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = self.shape(key)
        if shape != tuple(expected_shape):
            raise CheckpointError(f"{self.directory / self.weight_map[key]}: tensor {key!r} has shape "
                                  f"{list(shape)}, config.json implies {list(expected_shape)}")
        return shape

    def _check_finite(self, key: str, tensor: torch.Tensor) -> None:
        if not all_finite(tensor):
            raise CheckpointError(f"{self.directory / self.weight_map[key]}: tensor {key!r} holds NaN or "
                                  "infinite values")

    def _read(self, key: str, shape: tuple[int, ...], dtype: torch.dtype, start: int, stop: int) -> torch.Tensor:
        """Rows `start:stop` of tensor `key` (all of a 0-d tensor: rows 0:1), read with plain file reads at the
        offsets the safetensors header gives, straight into the new tensor's memory. Not through the memory
        map: a mapped page is faulted in 4 KB at a time (slower than the copy a read makes) and then counts
        in this process's resident memory for as long as the map lives, the rest of the source's pages with it."""
        # On the CPU whatever the default device: callers load into models built on the meta device.
        tensor = torch.empty((stop - start, *shape[1:]) if shape else (), dtype=dtype, device="cpu")
        if tensor.numel():
            read_into(self._data[self.weight_map[key]][0], tensor, self._offset(key, shape, dtype, start))
        return tensor

    def _offset(self, key: str, shape: tuple[int, ...], dtype: torch.dtype, row: int) -> int:
        """Where row `row` of tensor `key` begins in its file."""
        _, header, data_start = self._data[self.weight_map[key]]
        begin, _ = header[key]["data_offsets"]
        return data_start + begin + row * math.prod(shape[1:]) * dtype.itemsize


def read_into(file: io.FileIO, tensor: torch.Tensor, offset: int) -> None:
    """Fill the contiguous `tensor` with the file's bytes from `offset`, read into its memory (a short read
    is continued; a file that ends first is an error)."""
    view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
    file.seek(offset)
    done = 0
    while done < len(view):
        n = file.readinto(view[done:])
        if not n:
            raise CheckpointError(f"{file.name}: ends {len(view) - done} bytes before a tensor does")
        done += n


def _header(file: io.FileIO) -> tuple[dict, int]:
    """A safetensors file's header (tensor name -> dtype, shape, data offsets) and where its data begins
    (`safe_open` has checked both)."""
    file.seek(0)
    size = struct.unpack("<Q", file.read(8))[0]
    return json.loads(file.read(size)), 8 + size


def all_finite(tensor: torch.Tensor, chunk: int = 2**24) -> bool:
    """Whether every value is finite. A sum is finite only if every term is, and one reduction costs a
    fraction of the element-wise test, so the sum settles the common case; a sum that overflows (or a
    tensor that does hold NaN) is then tested element by element, in chunks (the mask of a whole large
    tensor would double it)."""
    flat = tensor.reshape(-1)
    if not flat.is_floating_point() or bool(torch.isfinite(flat.sum())):
        return True
    return all(bool(torch.isfinite(flat[i:i + chunk]).all()) for i in range(0, flat.numel(), chunk))


def _read_weight_map(index: Path) -> dict[str, str]:
    """The `weight_map` of a safetensors index: tensor name -> a file name in the same directory."""
    weight_map = read_json(index, error=CheckpointError).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: weight_map must be a non-empty mapping of tensor names to files, "
                              f"got {quoted(weight_map)}")
    for key, name in weight_map.items():
        # A file name only: an index must not point outside its checkpoint directory.
        if not isinstance(name, str) or not name or name != Path(name).name or name in (".", ".."):
            raise CheckpointError(f"{index}: weight_map[{quoted(key)}] must be a file name in the "
                                  f"checkpoint directory, got {quoted(name)}")
    return weight_map


def read_config(path: str | os.PathLike) -> tuple[ModelConfig, str]:
    """The lab config and Hugging Face model type of a checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json (not a Hugging Face checkpoint directory)")
    return config_from_hf(read_json(config_file, error=CheckpointError), str(config_file))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "added_tokens.json", "generation_config.json")


def tokenizer_files(directory: str | os.PathLike) -> list[Path]:
    """The tokenizer (and generation config) files of a checkpoint directory, to copy along."""
    return [Path(directory) / name for name in TOKENIZER_FILES if (Path(directory) / name).is_file()]


def check_output_dir(path: str | os.PathLike, overwrite: bool = False, inputs: tuple = ()) -> Path:
    """Refuse an existing non-empty output directory unless `overwrite`, and an output that equals,
    contains or lies inside one of `inputs` (replacing it would delete the input, even with
    `overwrite`). Call it before any work."""
    path = Path(path)
    check_output_apart(path, *inputs)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: exists and is not a directory")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise CheckpointError(f"{path}: {parent} is not a directory")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise CheckpointError(f"{path}: already exists (choose another directory, or overwrite it explicitly)")
    return path


def check_output_apart(output: str | os.PathLike, *inputs: str | os.PathLike) -> None:
    """Refuse an output path that is, holds or sits inside any input path (symbolic links resolved)."""
    out = Path(output).resolve()
    for given in inputs:
        src = Path(given).resolve()
        if out == src:
            raise CheckpointError(f"{output}: is the input {given} itself; write to another directory")
        if out in src.parents:
            raise CheckpointError(f"{output}: contains the input {given}; write to another directory")
        if src in out.parents:
            raise CheckpointError(f"{output}: lies inside the input {given}; write to another directory")


# Temporary siblings of an output directory: `.NAME.tmp-PID-XXXXXXXX` while it is written and
# `.NAME.old-PID-XXXXXXXX` while it is replaced (the PID tells a live writer from a killed one; names
# without it come from versions of the lab that did not record it).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")


def temporary_sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of output `path` left by killed writers (not a live writer's)."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match is None or match["name"] != path.name or entry.is_symlink() or not entry.is_dir():
            continue
        pid = match["pid"]
        if pid is not None and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def write_checkpoint(path: str | os.PathLike, hf_config: dict, entries: list[TensorEntry], *,
                     max_shard_size: int | str = "5GB", overwrite: bool = False,
                     extra_files: list[Path] = (), progress: str | None = None, readme: str | None = None) -> Path:
    """Write a Hugging Face checkpoint directory from tensors made one at a time.

    Each entry's tensor is made when its turn comes (within a file, smallest first: `making_order`) and
    dropped once written, so peak memory is a few of the largest tensors; entries of one key are made once
    and kept for their repeats (`lab.checkpoint.memo`, within its budget). Above `max_shard_size` the
    tensors go to `model-0000i-of-0000n.safetensors` files with a `model.safetensors.index.json`. `extra_files` (tokenizer files) are copied along; `readme` is
    the model card (`lab.checkpoint.model_card`), written as README.md. All of it
    goes to a temporary sibling directory, renamed into place at the end: a failure leaves nothing.
    `progress` names a progress bar over the bytes written (None: no bar).
    """
    path = check_output_dir(path, overwrite)
    files = _made_once_in_order(planned_files(entries, max_shard_size))
    total = sum(e.nbytes for e in entries)
    remove_stale_temporaries(path)
    tmp = temporary_sibling(path, "tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.mkdir()
        with tqdm(total=total, unit="B", unit_scale=True, desc=progress,
                  disable=True if progress is None else None) as bar:
            for name, shard, order in files:
                write_safetensors(tmp / name, shard, on_tensor=lambda e: bar.update(e.nbytes), order=order)
        if len(files) > 1:
            weight_map = {e.name: name for name, shard, _ in files for e in shard}
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        for src in extra_files:
            shutil.copyfile(src, tmp / Path(src).name)
        if readme is not None:
            (tmp / "README.md").write_text(readme, encoding="utf-8")
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def made_once(entries: list[TensorEntry]) -> list[TensorEntry]:
    """`entries`, those of one key sharing one made tensor, kept between its uses within the memo's budget
    (the entries are made in order, across every shard)."""
    keys = [("entry", i) if e.key is None else e.key for i, e in enumerate(entries)]
    memo = RepeatMemo(keys, repeat_budget([e.nbytes for e in entries]))
    return [dataclasses.replace(e, make=functools.partial(memo.get, i, e.make)) for i, e in enumerate(entries)]


PlannedFile = tuple[str, list[TensorEntry], list[int]]  # file name, entries in the header's order, making order


def planned_files(entries: list[TensorEntry], max_shard_size: int | str) -> list[PlannedFile]:
    """The safetensors files `write_checkpoint` writes `entries` to: (file name, its entries in the header's
    order, the order their tensors are made in: `making_order`)."""
    shards = _plan_shards(entries, parse_size(max_shard_size))
    names = ([SINGLE_FILE] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    return [(name, shard, making_order(shard)) for name, shard in zip(names, shards)]


def making_sequence(entries: list[TensorEntry], max_shard_size: int | str) -> list[TensorEntry]:
    """`entries` in the order `write_checkpoint` makes their tensors. A process that takes part in what making
    a tensor runs (an all-gather: `lab.train.sharded_checkpoint`) but writes nothing follows this order."""
    return [shard[i] for _, shard, order in planned_files(entries, max_shard_size) for i in order]


def _made_once_in_order(files: list[PlannedFile]) -> list[PlannedFile]:
    """`files` (as `planned_files` gives them) with `made_once` applied in the order the tensors will be made
    (each file's making order, file after file), each entry back at its place in its file."""
    made = iter(made_once([shard[i] for _, shard, order in files for i in order]))
    result = []
    for name, shard, order in files:
        placed: list[TensorEntry | None] = [None] * len(shard)
        for i in order:
            placed[i] = next(made)
        result.append((name, placed, order))
    return result


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
    old = temporary_sibling(path, "old")
    path.rename(old)
    new.rename(path)
    shutil.rmtree(old, ignore_errors=True)
