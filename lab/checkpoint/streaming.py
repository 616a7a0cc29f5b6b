"""Checkpoints under the lab's parameter names: one tensor source and one writer for everything.

`CheckpointSource` gives a Hugging Face directory's tensors under the lab's parameter names, one at a
time; `write_lab_checkpoint` writes a config's tensors, each made by a callback only when its turn
comes, so peak memory is a few tensors, never a model. `load_pretrained` is the source read into a
model; `save_pretrained` is a model's state written by the writer; growth and upcycling
(`lab.derive`) stream from the one into the other.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Hashable

import torch

from lab.checkpoint.hf_config import config_to_hf, hf_model_type
from lab.checkpoint.hf_names import expert_bias_maps, filler_tensors, tensor_maps
from lab.checkpoint.io import SafetensorsReader, check_output_dir, read_config, tokenizer_files, write_checkpoint
from lab.checkpoint.safetensors_stream import TensorEntry
from lab.config import ModelConfig, dtype_name
from lab.model import parameter_shapes

# make(name, expert) -> tensor: `name` is a lab parameter name; `expert` is the expert index for the
# stacked (E, ...) expert weights, whose experts are written as separate checkpoint tensors, else None.
MakeTensor = Callable[[str, "int | None"], torch.Tensor]
# key(name, expert) -> what that tensor depends on: tensors of equal keys are equal, so one is made and
# written for each (`lab.checkpoint.memo`). A rule offers it as `make.key`; without it, every tensor is made.
TensorKey = Callable[[str, "int | None"], Hashable]


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
        try:
            self.dtype: torch.dtype = getattr(torch, self._reader.dtype("model.embed_tokens.weight"))
            self.config = self.config.replace(dtype=dtype_name(self.dtype))
            self.shapes = parameter_shapes(self.config)
            self._maps = {m.lab: m for m in tensor_maps(self.config, self.model_type)}
            self._bias_maps = {m.lab: m for m in expert_bias_maps(self.config, self.model_type)}
        except BaseException:
            self.close()  # the files stay open otherwise, until the garbage collector finds them
            raise

    def __enter__(self) -> "CheckpointSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.__exit__(None, None, None)

    def tokenizer_files(self) -> list[Path]:
        return tokenizer_files(self.path)

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows `start:stop` (first dimension) of `tensor(name)`, reading only them: a stacked expert weight's
        rows are experts, read one file tensor each."""
        tmap, shape = self._lookup(name)
        if not tmap.stacked:
            return self._reader.get_rows(tmap.hf[0], shape, start, stop)
        experts = [self._reader.get(tmap.hf[e], shape[1:]) for e in range(start, min(stop, shape[0]))]
        return torch.stack(experts) if experts else torch.empty((0, *shape[1:]), dtype=self.dtype)

    def read_into(self, name: str, out: torch.Tensor, box: tuple[slice, ...] | None = None) -> torch.Tensor:
        """Fill `out` with `tensor(name)[box]` (default: the whole tensor), converted to `out`'s dtype, reading
        only the rows the box spans (a stacked expert weight's rows are experts, one file tensor each);
        returns `out`. What a process of a sharded run loads its piece of a parameter with
        (lab.train.setup.load_shards). Invariant: besides `out`, at most one read chunk is held
        (`SafetensorsReader.read_box_into`): never the whole tensor, nor a second copy of the piece."""
        tmap, shape = self._lookup(name)
        box = tuple(slice(0, n) for n in shape) if box is None else tuple(box)
        if not tmap.stacked:
            return self._reader.read_box_into(tmap.hf[0], shape, out, box)
        experts = range(shape[0])[box[0]]
        if out.shape[0] != len(experts):
            raise ValueError(f"{name}: box {box} of shape {list(shape)} does not match out {list(out.shape)}")
        for i, e in enumerate(experts):
            self._reader.read_box_into(tmap.hf[e], shape[1:], out[i], box[1:])
        return out

    def unused_keys(self) -> list[str]:
        """The checkpoint's tensors the lab's model does not read (a warning's matter, not an error)."""
        known = {key for tmap in (*self._maps.values(), *self._bias_maps.values()) for key in tmap.hf}
        known |= set(filler_tensors(self.config, self.model_type)) | {"lm_head.weight"}
        return [key for key in self._reader.weight_map if key not in known and not _ignorable(key)]

    def expert_biases(self) -> dict[str, torch.Tensor]:
        """The aux-free expert biases the checkpoint stores, by lab name (`expert_bias_maps`); the model loads
        a missing one as zero (lab.moe.MoE)."""
        return {name: self._reader.get(tmap.hf[0], (self.config.n_experts,))
                for name, tmap in self._bias_maps.items() if tmap.hf[0] in self._reader.weight_map}

    def _lookup(self, name: str):
        """(the tensor map, the lab shape) of parameter `name`; a tied head reads the embedding."""
        if name == "lm_head.weight" and self.config.tie_embeddings:
            name = "tok_embeddings.weight"
        if name not in self._maps:
            raise KeyError(f"{self.path}: the model has no parameter {name!r}")
        return self._maps[name], self.shapes[name]

    def tensor(self, name: str, expert: int | None = None) -> torch.Tensor:
        tmap, shape = self._lookup(name)
        if not tmap.stacked:
            return self._reader.get(tmap.hf[0], shape)
        if expert is not None:
            return self._reader.get(tmap.hf[expert], shape[1:])
        return torch.stack([self._reader.get(key, shape[1:]) for key in tmap.hf])


def _ignorable(key: str) -> bool:
    # Qwen2-MoE keeps an (empty) shared expert even when the config says it has none.
    return ".shared_expert" in key or key.endswith("rotary_emb.inv_freq")


def load_pretrained(path: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
                    device: torch.device | str = "cpu", moe_dispatch: str | None = None):
    """The lab's model for a Hugging Face checkpoint directory (llama, mistral, qwen2, mixtral, qwen2_moe).

    The weights keep the checkpoint's dtype unless `dtype` is given. The model is built on the meta
    device and its parameters are the tensors read from disk, so memory holds one copy of the weights.
    """
    from lab.model import DecoderLM

    with CheckpointSource(path) as source:
        changes = {"dtype": dtype_name(dtype) if dtype is not None else source.config.dtype}
        if moe_dispatch is not None:
            changes["moe_dispatch"] = moe_dispatch
        cfg = source.config.replace(**changes)
        target = getattr(torch, cfg.dtype)
        state = {name: source.tensor(name).to(device=device, dtype=target) for name in source.shapes}
        state.update({name: bias.to(device=device, dtype=target) for name, bias in source.expert_biases().items()})
        unused = source.unused_keys()
    if unused:
        warnings.warn(f"{path}: {len(unused)} tensor(s) not used by the model, e.g. {unused[0]!r}")
    with torch.device("meta"):
        model = DecoderLM(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def lab_entries(cfg: ModelConfig, model_type: str, make: MakeTensor, dtype: torch.dtype, *,
                expert_bias: bool = False, key: TensorKey | None = None) -> list[TensorEntry]:
    """The checkpoint tensors of config `cfg` under their Hugging Face names, each made by `make` when written.

    Shapes come from the config, so the whole layout (and the shard plan) is known before anything is
    made. `qwen2_moe` filler tensors (zeros) are added where the format needs them. With `expert_bias`,
    `make` gives the aux-free expert biases too (a trained model's state: `expert_bias_maps`); a derived
    model (growth, upcycling) is written without them, which reads back as zero biases. `key` gives each
    tensor its memo key (`TensorKey`); fillers of one shape share one.
    """
    shapes = parameter_shapes(cfg)
    entries = []

    def entry(hf_name: str, shape: tuple[int, ...], name: str, expert: int | None) -> TensorEntry:
        return TensorEntry(hf_name, shape, dtype, lambda: make(name, expert),
                           None if key is None else ("made", key(name, expert)))

    for tmap in tensor_maps(cfg, model_type):
        shape = shapes[tmap.lab]
        if tmap.stacked:
            entries += [entry(hf_name, shape[1:], tmap.lab, e) for e, hf_name in enumerate(tmap.hf)]
        else:
            entries.append(entry(tmap.hf[0], shape, tmap.lab, None))
    for hf_name, shape in filler_tensors(cfg, model_type).items():
        entries.append(TensorEntry(hf_name, shape, dtype, lambda s=shape: torch.zeros(s, dtype=dtype),
                                   ("zeros", shape)))
    if expert_bias:
        entries += [entry(tmap.hf[0], (cfg.n_experts,), tmap.lab, None) for tmap in expert_bias_maps(cfg, model_type)]
    return entries


def write_lab_checkpoint(path: str | os.PathLike, cfg: ModelConfig, make: MakeTensor, *,
                         model_type: str | None = None, extra_files: list[Path] = (),
                         max_shard_size: int | str = "5GB", overwrite: bool = False,
                         progress: str | None = None, readme: str | None = None,
                         expert_bias: bool = False) -> Path:
    """Write a checkpoint of config `cfg` (dtype `cfg.dtype`) whose tensors `make` produces one at a time.

    `model_type` defaults to the one the config implies (`hf_model_type`); `readme` is its model card.
    `expert_bias`: `make` gives the aux-free expert biases too (`lab_entries`). A `make.key` (`TensorKey`)
    lets repeated tensors be made once. Atomic, as `write_checkpoint`.
    """
    model_type = model_type or hf_model_type(cfg)
    dtype = getattr(torch, cfg.dtype)

    def make_cast(name: str, expert: int | None) -> torch.Tensor:
        return make(name, expert).to(dtype).contiguous()  # once per made tensor: the memo keeps the cast one

    entries = lab_entries(cfg, model_type, make_cast, dtype, expert_bias=expert_bias, key=getattr(make, "key", None))
    return write_checkpoint(path, config_to_hf(cfg, model_type), entries,
                            max_shard_size=max_shard_size, overwrite=overwrite, extra_files=extra_files,
                            progress=progress, readme=readme)


def model_entries(model, cfg: ModelConfig, model_type: str) -> list[TensorEntry]:
    """The checkpoint tensors of a lab model under their Hugging Face names (one tensor per expert)."""
    state = model.state_dict()

    def make(name: str, expert: int | None) -> torch.Tensor:
        return state[name] if expert is None else state[name][expert]

    return lab_entries(cfg, model_type, make, getattr(torch, cfg.dtype), expert_bias=True)


def warn_if_transformers_routes_otherwise(model, model_type: str) -> bool:
    """Warn (and return True) when `model` holds a nonzero aux-free expert bias: transformers' `model_type`
    has no such bias, so there it chooses experts by the router alone and its logits differ from the lab's."""
    biased = [name for name, t in model.state_dict().items() if name.endswith("expert_bias") and bool(t.any())]
    if biased:
        warnings.warn(f"{len(biased)} MoE layer(s) route with a nonzero aux-free expert bias (e.g. {biased[0]!r}): "
                      f"it is saved as e_score_correction_bias, which transformers' {model_type} does not use, so "
                      "transformers chooses experts without it and its outputs differ from the lab's", stacklevel=3)
    return bool(biased)


def save_pretrained(model, path: str | os.PathLike, *, max_shard_size: int | str = "5GB",
                    overwrite: bool = False, tokenizer_dir: str | os.PathLike | None = None,
                    readme: str | None = None) -> Path:
    """Write `model` as a Hugging Face checkpoint directory that transformers opens.

    The model type follows from the config (`hf_model_type`), the dtype is the model's. Above
    `max_shard_size` the weights are sharded with an index; the tokenizer files found in
    `tokenizer_dir` are copied along; `readme` is the model card (by default one that states the model's
    shape). The write is atomic (see `write_checkpoint`); an existing non-empty `path` is replaced only
    with `overwrite`.
    """
    from lab.checkpoint.model_card import model_card

    check_output_dir(path, overwrite)
    dtype = next(iter(model.state_dict().values())).dtype
    cfg = model.config.replace(dtype=dtype_name(dtype))
    model_type = hf_model_type(cfg)
    warn_if_transformers_routes_otherwise(model, model_type)
    extra = tokenizer_files(tokenizer_dir) if tokenizer_dir is not None else []
    if readme is None:
        readme = model_card(title=Path(path).name, summary="A decoder saved with `lab.save_pretrained`.", cfg=cfg,
                            model_type=model_type)
    return write_checkpoint(path, config_to_hf(cfg, model_type), model_entries(model, cfg, model_type),
                            max_shard_size=max_shard_size, overwrite=overwrite, extra_files=extra, readme=readme)
