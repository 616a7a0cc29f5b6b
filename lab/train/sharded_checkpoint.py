"""The tensors of a training checkpoint written by several processes: each process writes its own shards
of the model and of the optimizer state with torch.distributed.checkpoint (DCP), and any number of
processes reads them back.

Storage is DCP's Hugging Face storage (`HuggingFaceStorageWriter(save_distributed=True)`): process r
writes `shards/shard-<r+1>-model-00001-of-00001.safetensors`, holding the pieces of each tensor it owns,
and that file's safetensors header records (as JSON, `DCP_SHARDING_INFO`) where each piece sits in the
whole tensor. DCP's own `.metadata` file (pickled) is not written: `HuggingFaceStorageReader` rebuilds
the metadata from those JSON headers, so reading a checkpoint never unpickles anything. DCP's planner
reshards on reading: what N processes wrote, M processes read, each process reading only the pieces
that overlap its own shard. `ShardWriter` writes in a background thread (`dcp.async_save`); the
checkpoint around the shards, and when it counts as complete, is lab.train.state's.

Keys: `model/<name>` for the model's state (`get_model_state_dict`: parameters and persistent buffers)
and `optim/<name>/<key>` for the optimizer's tensors (`get_optimizer_state_dict`: exp_avg, exp_avg_sq,
step), parameter names throughout, which do not depend on the number of processes. The optimizer's
hyper-parameters (param_groups) are not tensors: lab.train.state keeps them in training_state.json.

`write_hf_streaming` is the other direction for a Hugging Face export (DIR/final): the sharded model
gathered one tensor at a time, so no process ever holds the whole model.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import Future
from pathlib import Path

import torch
from torch import nn

from lab.config import ModelConfig

SHARDS = "shards"
# The exported model's safetensors files: the writer and the processes that only take part in its gathers
# must plan the same files, so both are given this size.
MAX_SHARD_SIZE = "5GB"
_MODEL, _OPTIM = "model/", "optim/"


def has_shards(path: Path) -> bool:
    """Whether checkpoint `path` keeps its tensors as DCP shards (written by several processes)."""
    return (Path(path) / SHARDS).is_dir()


def _flatten(model_state: dict[str, torch.Tensor], optim_state: dict[str, dict]) -> dict[str, torch.Tensor]:
    flat = {_MODEL + name: t for name, t in model_state.items()}
    for name, values in optim_state.items():
        flat.update({f"{_OPTIM}{name}/{key}": v for key, v in values.items()})
    return flat


class ShardWriter:
    """Writes this process's shards of the model and the optimizer state in a background thread
    (`dcp.async_save`), so that training goes on while they reach the disk.

    `start` is a collective (every process calls it): it copies the state into CPU memory before it returns
    (DCP's default staging), so the steps that follow do not change what is written. The thread's own
    collectives (planning the save, gathering the write results) go through a gloo group of their own,
    made on the first save: async saving needs a CPU backend, and they never interleave with training's.
    """

    def __init__(self):
        self._group = None

    def start(self, checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Future, list[dict]]:
        """Begin writing to `checkpoint`/shards; returns (a future that completes on every process once every
        process has written its file, the optimizer's param_groups to keep as JSON)."""
        import torch.distributed as dist
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import HuggingFaceStorageWriter
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        if self._group is None and dist.is_initialized():
            self._group = dist.new_group(backend="gloo")
        # The model's first: its state-dict hook puts FSDP2's sharded parameters back in place (the root keeps
        # its gathered ones after a forward), which the optimizer's names are then mapped from. DTensors: no gather.
        model_state = get_model_state_dict(model)
        optim = get_optimizer_state_dict(model, optimizer)
        writer = HuggingFaceStorageWriter(str(Path(checkpoint) / SHARDS), save_distributed=True)
        with warnings.catch_warnings():  # one process without a process group is a case DCP handles, not a mistake
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            future = dcp.async_save(_flatten(model_state, optim["state"]), storage_writer=writer,
                                    process_group=self._group)
        return future, optim["param_groups"]


def _read(checkpoint: Path, targets: dict[str, torch.Tensor]) -> None:
    """Fill `targets` in place from the shards of `checkpoint` (DCP reshards to the targets' layout)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(targets, storage_reader=HuggingFaceStorageReader(str(Path(checkpoint) / SHARDS)))


def load_model_shards(model: nn.Module, checkpoint: Path, device: torch.device) -> nn.Module:
    """Give a model built on the meta device (sharded by FSDP2 or not) the weights of `checkpoint`:
    each process allocates and reads its own shard only."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    model.to_empty(device=device)
    state = get_model_state_dict(model)
    with torch.no_grad():
        _read(checkpoint, {_MODEL + name: t for name, t in state.items()})
    set_model_state_dict(model, state)
    return model


def load_optimizer_shards(model: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: Path,
                          param_groups: list[dict]) -> None:
    """Load the optimizer state of `checkpoint`, with `param_groups` (as `ShardWriter.start` returned them)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    # AdamW makes its state lazily; asking for the state dict makes it (a zero-lr step, which the loader skips
    # when gradients exist), in this process's layout, for DCP to read into.
    optimizer.zero_grad(set_to_none=True)
    optim = get_optimizer_state_dict(model, optimizer)
    _read(checkpoint, _flatten({}, optim["state"]))
    set_optimizer_state_dict(model, optimizer, {"state": optim["state"], "param_groups": param_groups})


def shards_problem(checkpoint: Path, cfg: ModelConfig) -> str | None:
    """Why the shards of `checkpoint` cannot be read back as a model of config `cfg` (one line), or None
    when every model tensor is there whole: each tensor's pieces, over all the files, cover its shape."""
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    from lab.model import DecoderLM

    stored = HuggingFaceStorageReader(str(Path(checkpoint) / SHARDS)).read_metadata().state_dict_metadata
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in DecoderLM(cfg).state_dict().items()}
    for name, shape in expected.items():
        found = stored.get(_MODEL + name)
        if found is None:
            return f"{SHARDS}: no tensor {_MODEL + name}"
        if tuple(found.size) != shape:  # the reader sizes a tensor by the pieces it finds
            return (f"{SHARDS}: the pieces of {_MODEL + name} cover {tuple(found.size)}, not the config's {shape} "
                    "(a shard file is missing)")
    for key, found in stored.items():
        if sum(math.prod(chunk.sizes) for chunk in found.chunks) != math.prod(found.size):
            return f"{SHARDS}: the pieces of {key} do not cover its shape {tuple(found.size)} (a shard file is missing)"
    return None


def write_hf_streaming(path: Path | None, model: nn.Module, cfg: ModelConfig, *, extra_files=(),
                       readme: str | None = None) -> None:
    """Write `model` (sharded by FSDP2) as the Hugging Face checkpoint `path`, gathering one tensor at a time.

    A collective: every process calls it and takes part in each tensor's all-gather, in the order the writer
    makes them (`making_sequence`); the process given a `path` (rank 0) writes, the others pass None. Peak
    memory is the tensor being gathered (a stacked expert weight is gathered once for all its experts) and
    those queued for writing, never the model. The files equal those `write_lab_checkpoint` writes from the
    gathered state dict."""
    from lab.checkpoint import hf_model_type, write_lab_checkpoint
    from lab.checkpoint.io import making_sequence
    from lab.checkpoint.streaming import lab_entries
    from lab.distributed import full_tensor

    state = model.state_dict()  # this process's shards (DTensors); nothing is gathered yet
    gathered: dict[str, torch.Tensor] = {}

    def make(name: str, expert: int | None) -> torch.Tensor:
        if name not in gathered:
            gathered.clear()  # the previous tensor is written: drop it before gathering the next one
            gathered[name] = full_tensor(state[name].detach()).cpu()
        whole = gathered[name]
        return whole if expert is None else whole[expert]

    if path is not None:
        write_lab_checkpoint(path, cfg, make, extra_files=list(extra_files), readme=readme, expert_bias=True,
                             max_shard_size=MAX_SHARD_SIZE)
    else:
        entries = lab_entries(cfg, hf_model_type(cfg), make, getattr(torch, cfg.dtype), expert_bias=True)
        for entry in making_sequence(entries, MAX_SHARD_SIZE):
            entry.make()
