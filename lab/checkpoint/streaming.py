"""Checkpoint-to-checkpoint transforms that stream: read one source tensor, make one output tensor, write it.

Growth and upcycling both turn one Hugging Face directory into another whose shapes follow from a
target config. `CheckpointSource` gives the source's tensors under the lab's parameter names, one at a
time; `write_lab_checkpoint` writes a target config's tensors, each made by a callback only when its
turn comes. Peak memory is then a few tensors, never a model. `save_pretrained` writes an in-memory
model through the same tensor naming (`lab_entries`) and writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from lab.checkpoint.hf_config import config_to_hf, hf_model_type
from lab.checkpoint.hf_names import filler_tensors, tensor_maps
from lab.checkpoint.io import SafetensorsReader, check_output_dir, read_config, tokenizer_files, write_checkpoint
from lab.checkpoint.safetensors_stream import TensorEntry
from lab.config import ModelConfig, dtype_name

# make(name, expert) -> tensor: `name` is a lab parameter name; `expert` is the expert index for the
# stacked (E, ...) expert weights, whose experts are written as separate checkpoint tensors, else None.
MakeTensor = Callable[[str, "int | None"], torch.Tensor]


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter of a lab model of config `cfg` (built on the meta device: no memory)."""
    from lab.model import DecoderLM

    with torch.device("meta"):
        model = DecoderLM(cfg)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


class CheckpointSource:
    """A checkpoint directory opened for streaming: its config, and its tensors under lab names.

    `tensor("layers.3.attn.q_proj.weight")` reads that one tensor; a stacked expert weight is read as
    (E, ...) or, with `expert=e`, one expert only. For a tied-embedding source, `lm_head.weight` reads
    the embedding. Use as a context manager, or call `close()`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config, self.model_type = read_config(self.path)
        self._reader = SafetensorsReader(self.path)
        self.dtype: torch.dtype = getattr(torch, self._reader.dtype("model.embed_tokens.weight"))
        self.config = self.config.replace(dtype=dtype_name(self.dtype))
        self.shapes = parameter_shapes(self.config)
        self._maps = {m.lab: m for m in tensor_maps(self.config, self.model_type)}

    def __enter__(self) -> "CheckpointSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.__exit__(None, None, None)

    def tokenizer_files(self) -> list[Path]:
        return tokenizer_files(self.path)

    def tensor(self, name: str, expert: int | None = None) -> torch.Tensor:
        if name == "lm_head.weight" and self.config.tie_embeddings:
            name = "tok_embeddings.weight"
        if name not in self._maps:
            raise KeyError(f"{self.path}: the model has no parameter {name!r}")
        tmap, shape = self._maps[name], self.shapes[name]
        if not tmap.stacked:
            return self._reader.get(tmap.hf[0], shape)
        if expert is not None:
            return self._reader.get(tmap.hf[expert], shape[1:])
        return torch.stack([self._reader.get(key, shape[1:]) for key in tmap.hf])


def lab_entries(cfg: ModelConfig, model_type: str, make: MakeTensor, dtype: torch.dtype) -> list[TensorEntry]:
    """The checkpoint tensors of config `cfg` under their Hugging Face names, each made by `make` when written.

    Shapes come from the config, so the whole layout (and the shard plan) is known before anything is
    made. `qwen2_moe` filler tensors (zeros) are added where the format needs them.
    """
    shapes = parameter_shapes(cfg)
    entries = []
    for tmap in tensor_maps(cfg, model_type):
        shape = shapes[tmap.lab]
        if tmap.stacked:
            entries += [TensorEntry(key, shape[1:], dtype, lambda n=tmap.lab, e=e: make(n, e))
                        for e, key in enumerate(tmap.hf)]
        else:
            entries.append(TensorEntry(tmap.hf[0], shape, dtype, lambda n=tmap.lab: make(n, None)))
    for key, shape in filler_tensors(cfg, model_type).items():
        entries.append(TensorEntry(key, shape, dtype, lambda s=shape: torch.zeros(s, dtype=dtype)))
    return entries


def write_lab_checkpoint(path: str | os.PathLike, cfg: ModelConfig, make: MakeTensor, *,
                         model_type: str | None = None, extra_files: list[Path] = (),
                         max_shard_size: int | str = "5GB", overwrite: bool = False,
                         progress: str | None = None) -> Path:
    """Write a checkpoint of config `cfg` (dtype `cfg.dtype`) whose tensors `make` produces one at a time.

    `model_type` defaults to the one the config implies (`hf_model_type`). Atomic, as `write_checkpoint`.
    """
    model_type = model_type or hf_model_type(cfg)
    dtype = getattr(torch, cfg.dtype)

    def make_cast(name: str, expert: int | None) -> torch.Tensor:
        return make(name, expert).to(dtype).contiguous()

    return write_checkpoint(path, config_to_hf(cfg, model_type), lab_entries(cfg, model_type, make_cast, dtype),
                            max_shard_size=max_shard_size, overwrite=overwrite, extra_files=extra_files,
                            progress=progress)


def model_entries(model, cfg: ModelConfig, model_type: str) -> list[TensorEntry]:
    """The checkpoint tensors of a lab model under their Hugging Face names (one tensor per expert)."""
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
    cfg = model.config.replace(dtype=dtype_name(dtype))
    model_type = hf_model_type(cfg)
    extra = tokenizer_files(tokenizer_dir) if tokenizer_dir is not None else []
    return write_checkpoint(path, config_to_hf(cfg, model_type), model_entries(model, cfg, model_type),
                            max_shard_size=max_shard_size, overwrite=overwrite, extra_files=extra)
