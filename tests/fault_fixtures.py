"""Tiny bad inputs for the fault suite: checkpoints, recipes and run directories, each broken one way.

Everything is built with the lab itself (no transformers import) and is a few hundred kilobytes, so a
case costs milliseconds to set up.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import torch
import yaml

import lab
from lab.data import DATA_DIR

# vocab 4096: the shipped tokenizer's, so that --prompt, --verify and training work on these checkpoints.
TINY_MODEL = {"vocab_size": 4096, "dim": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "ffn_dim": 32,
              "max_seq_len": 64}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def dense_checkpoint(path: Path, **changes) -> Path:
    """A tiny qwen2 (q/k/v bias, GQA) checkpoint with the shipped tokenizer."""
    torch.manual_seed(0)
    model = lab.DecoderLM(lab.ModelConfig(**{**TINY_MODEL, **changes}))
    lab.save_pretrained(model, path)
    for name in TOKENIZER_FILES:
        shutil.copyfile(DATA_DIR / name, path / name)
    return path


def edit_config(path: Path, **changes) -> Path:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))
    return path


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def with_nan_weight(path: Path) -> Path:
    """The checkpoint with one weight set to NaN (written through safetensors, as a broken trainer would)."""
    from safetensors.torch import load_file, save_file

    file = path / "model.safetensors"
    tensors = load_file(str(file))
    tensors["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, str(file), metadata={"format": "pt"})
    return path


def with_integer_tensor(path: Path) -> Path:
    from safetensors.torch import load_file, save_file

    file = path / "model.safetensors"
    tensors = load_file(str(file))
    key = "model.layers.0.mlp.up_proj.weight"
    tensors[key] = torch.zeros(tensors[key].shape, dtype=torch.int64)
    save_file(tensors, str(file), metadata={"format": "pt"})
    return path


def sharded_with_index(path: Path, weight_map) -> Path:
    """The checkpoint's single file renamed to a shard, with an index whose weight_map is `weight_map`."""
    (path / "model.safetensors").rename(path / "model-00001-of-00001.safetensors")
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def truncated_safetensors(file: Path) -> None:
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    file.write_bytes(data[: 8 + n + 16])  # the header whole, the data cut


ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]) + "\nrun: bomb\n"


def recipe_file(path: Path, values) -> Path:
    path.write_text(values if isinstance(values, str) else yaml.safe_dump(values))
    return path


def fingerprint(*roots: Path) -> dict[str, str]:
    """Path -> sha256 of every file under `roots` (sources must come out of a failed command unchanged)."""
    found = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for p in files:
            found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found
