"""Everything a run checks and builds before its first step, in the order that keeps failures clean.

Each check raises one LabError line before anything is written: the output directory (a fresh one, or
the same run to resume), the starting checkpoint, the tokenizer and corpus, and the shapes that must
agree (tokenizer vocabulary within the model's, seq_len within its context, batch divisible by the
number of processes).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from lab import data, distributed
from lab.checkpoint import CheckpointSource, load_pretrained, read_config
from lab.checkpoint.io import check_output_apart
from lab.config import ModelConfig
from lab.distributed import DistInfo
from lab.errors import LabError
from lab.model import DecoderLM
from lab.train.lock import LOCK_FILE
from lab.train.metrics import read_meta
from lab.train.recipe import Recipe
from lab.train.sharded_checkpoint import has_shards, load_model_shards
from lab.train.state import checkpoint_problem, complete_checkpoints


def check_run_dir(out: Path, recipe: Recipe, resume: bool, report=None) -> Path | None:
    """The checkpoint to resume from (None: start at step 0), after checking `out` suits the request.

    With `resume`, the newest checkpoint that reads back whole (`checkpoint_problem`); each newer one
    that does not is passed over and `report` (default: stderr) says so.
    """
    if out.exists() and not out.is_dir():
        raise LabError(f"{out}: exists and is not a directory; choose another --out")
    if recipe.init_from is not None and recipe.init_from != "<previous stage>":
        check_output_apart(out, recipe.init_from)
    meta = read_meta(out)
    same = meta is not None and meta.get("recipe_digest") == recipe.digest()
    if resume:
        if meta is None:
            raise LabError(f"{out}: nothing to resume (no meta.json of an earlier run there)")
        if not same:
            raise LabError(f"{out}: holds run {meta.get('run')!r} with a different recipe "
                           f"(--resume needs the recipe the run started with)")
        for _, path in reversed(complete_checkpoints(out)):
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            (report or _warn)(f"warning: checkpoint {path} cannot be read back ({problem}); "
                              "trying the one before it")
        return None  # stopped before its first checkpoint (or none is intact): start over
    if meta is not None:
        hint = "pass --resume to continue it" if same else "its recipe differs from this one"
        raise LabError(f"{out}: already holds run {meta.get('run')!r} ({hint}); or choose another --out")
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise LabError(f"{out}: exists and is not an empty directory; choose another --out")
    return None


def _warn(line: str) -> None:
    print(line, file=sys.stderr)


def base_config(recipe: Recipe) -> ModelConfig:
    """The model's config: the recipe's, or that of the checkpoint it starts from."""
    if recipe.model is not None:
        return recipe.model
    cfg, _ = read_config(recipe.init_from)
    return cfg.replace(dtype="float32")


@dataclass
class RunData:
    tokenizer: object
    tokenizer_dir: Path
    eos: int
    batches: data.TrainBatches
    validation: dict[str, torch.Tensor]
    prompts: dict[str, str]


def load_data(recipe: Recipe, cfg: ModelConfig, info: DistInfo) -> RunData:
    spec = recipe.data
    tokenizer_path = Path(spec.tokenizer) if spec.tokenizer is not None else data.DEFAULT_TOKENIZER
    tokenizer = data.load_tokenizer(tokenizer_path)
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise LabError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens, more than the model's "
                       f"vocab_size {cfg.vocab_size}")
    if spec.seq_len > cfg.max_seq_len:
        raise LabError(f"recipe data.seq_len: must be <= the model's max_seq_len ({cfg.max_seq_len}), got {spec.seq_len}")
    if spec.batch_size % info.world_size:
        raise LabError(f"recipe data.batch_size: {spec.batch_size} must be divisible by the "
                       f"{info.world_size} processes")
    # The processes' layout is checked with the batch they split, before anything is written.
    distributed.check_shard_group(recipe.hardware.shard_group, recipe.hardware.expert_parallel, info.world_size)
    if spec.tokens is not None:
        from lab.corpus.shards import check_tokenizer, open_joined

        tokenizer_file = tokenizer_path / "tokenizer.json" if tokenizer_path.is_dir() else tokenizer_path
        check_tokenizer(spec.tokens, tokenizer_file)
        train_tokens = open_joined(spec.tokens, "train", spec.domains)
    else:
        train_tokens = data.load_tokens("train", corpus=spec.corpus, tokenizer=tokenizer)
        train_tokens = {d: train_tokens[d] for d in data.chosen_domains(train_tokens, spec.domains)}
    validation = data.validation_batches(data.load_tokens("validation", corpus=spec.corpus, tokenizer=tokenizer),
                                         spec.seq_len, recipe.train.eval_sequences)
    prompts = data.domain_prompts(spec.corpus) if recipe.train.sample_tokens else {}
    tokenizer_dir = tokenizer_path if tokenizer_path.is_dir() else tokenizer_path.parent
    return RunData(tokenizer, tokenizer_dir, data.eos_id(tokenizer),
                   data.TrainBatches(train_tokens, spec.seq_len, spec.batch_size, recipe.seed), validation, prompts)


def build_model(recipe: Recipe, cfg: ModelConfig, resume_from: Path | None, *, keep_meta: bool = False) -> DecoderLM:
    """The model at the run's first step: a checkpoint's weights, or a fresh one seeded by the recipe.

    Checkpoints are read onto the run's device directly (`load_pretrained` builds on the meta device
    and assigns the tensors read: one copy in memory); under FSDP2 (`keep_meta`) a checkpoint's model
    stays on meta too, and `place_model` loads each process's shards only (`load_shards`). A fresh model with `hardware.meta_init` on is
    built on the meta device and materialised on the run's device (`materialize`); `keep_meta` leaves
    it on meta, for `place_model` to shard first and then materialise each process's shard only.
    Then `configure` applies activation checkpointing and per-block compilation.
    """
    device = distributed.current_device(recipe.hardware.device)
    # A sharded checkpoint (written under torchrun) is read by DCP into a model on meta, on any number of processes.
    sharded_resume = resume_from is not None and has_shards(resume_from)
    if sharded_resume or (keep_meta and (resume_from is not None or recipe.init_from is not None)):
        # Sharded: the model stays on meta; `place_model` shards it, then each process reads the checkpoint
        # one tensor at a time and keeps its shard (`load_shards`), never the whole model.
        source = resume_from if resume_from is not None else recipe.init_from
        if sharded_resume:
            stored = read_config(source)[0]  # its config.json holds the dtype the shards are stored in
        else:
            with CheckpointSource(source) as checkpoint:  # its config, with the dtype its tensors are stored in
                stored = checkpoint.config
        # As load_pretrained would: a resume keeps the stored dtype and the run's dispatch, a start from a
        # checkpoint trains on fp32 master weights.
        meta_cfg = (stored.replace(moe_dispatch=cfg.moe_dispatch) if resume_from is not None
                    else stored.replace(dtype="float32"))
        with torch.device("meta"):
            model = DecoderLM(meta_cfg)
        model.weights_from = Path(source)
        return configure(model, recipe)
    if resume_from is not None:
        model = load_pretrained(resume_from, moe_dispatch=cfg.moe_dispatch, device=device)
    elif recipe.init_from is not None:
        # Train on fp32 master weights whatever the checkpoint stores (bf16 weights lose small updates).
        model = load_pretrained(recipe.init_from, dtype=torch.float32, device=device)
    elif recipe.hardware.switch(recipe.hardware.meta_init, device.type):
        with torch.device("meta"):
            model = DecoderLM(cfg)
        if not keep_meta:
            materialize(model, device, recipe.seed)
    else:
        torch.manual_seed(recipe.seed)
        model = DecoderLM(cfg)
    return configure(model, recipe)


def materialize(model: DecoderLM, device: torch.device, seed: int) -> DecoderLM:
    """Give a meta-device model real storage on `device` and initialise it (`DecoderLM.init_weights`).

    Invariant: the result equals an eagerly built model re-initialised under the same seed
    (`torch.manual_seed(seed); model.init_weights()`): every parameter is written, none left as the
    uninitialised memory of `to_empty`. (It does not equal `manual_seed(seed); DecoderLM(cfg)`, whose
    layer constructors draw from the generator before `init_weights` does.)

    A model sharded by FSDP2 (DTensor parameters) is initialised one parameter at a time: each process
    draws the whole parameter on the CPU from the same seed and keeps its own shard, so the sharded
    model equals the unsharded one materialised on the CPU (drawing each shard from the same local
    generator would repeat the same values in every shard).
    """
    model.to_empty(device=device)
    torch.manual_seed(seed)
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        model.init_weights()
        return model
    with torch.no_grad():
        for name, p in model.named_parameters():
            whole = torch.empty(p.shape, dtype=p.dtype)
            model.init_parameter_(name, whole)
            if isinstance(p, DTensor):
                # Every process holds `whole` already; each keeps its piece, no communication.
                p.to_local().copy_(whole[local_box(p)])
            else:
                p.copy_(whole)
    return model


def local_box(p) -> tuple[slice, ...]:
    """Where this process's piece of the DTensor parameter `p` lies in the whole tensor, one slice per
    dimension. FSDP2, HSDP and expert parallelism all shard whole rows or columns (Shard, or FSDP2's
    _StridedShard over an EP shard of the same dimension), so the piece is one box."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return tuple(slice(o, o + n) for o, n in zip(offset, shape))


def configure(model: DecoderLM, recipe: Recipe) -> DecoderLM:
    """Apply the recipe's runtime options in place: activation checkpointing, then `torch.compile` per
    block (torchtitan's order, before FSDP2 wraps the blocks). Parameter names and values are unchanged:
    `Module.compile` compiles in place, with no `_orig_mod.` prefix in the state dict."""
    hw = recipe.hardware
    model.activation_checkpointing = hw.activation_checkpointing
    if hw.compile:
        for block in model.layers:
            block.compile()
    return model


def place_model(model: DecoderLM, recipe: Recipe, info: DistInfo) -> torch.nn.Module:
    """The model where it trains: shard it (FSDP2 under torchrun) and move it to the device.

    A model still on the meta device (`build_model(..., keep_meta=True)`) is sharded first and then
    materialised, so that each process allocates only its shard: a model that does not fit whole in
    one device's memory (or twice in the host's) can still start.
    """
    hw = recipe.hardware
    layout = {"bf16": recipe.train.precision == "bf16", "expert_parallel": hw.expert_parallel,
              "shard_group": hw.shard_group}
    if any(p.is_meta for p in model.parameters()):
        source = getattr(model, "weights_from", None)
        model = distributed.shard(model.train(), info, **layout)
        if source is not None:
            return (load_model_shards if has_shards(source) else load_shards)(model, source, info.device)
        return materialize(model, info.device, recipe.seed)
    return distributed.shard(model.to(info.device).train(), info, **layout)


def load_shards(model: DecoderLM, path: Path, device: torch.device) -> DecoderLM:
    """Give a model sharded on the meta device (FSDP2, DTensor parameters) the weights of the checkpoint
    `path`: each process reads from the safetensors files only the rows that hold its piece (`local_box`),
    so its memory holds its shard, never the whole model. The same values as `load_pretrained` followed by
    sharding (tested by runs resumed on another number of processes).

    Invariant: the only memory this allocates is the shard itself (`to_empty`) and one bounded read chunk
    at a time: each piece is read in place into the parameter's local tensor, converted chunk by chunk
    when the checkpoint stores another dtype (`CheckpointSource.read_into`), so the peak stays near the
    shard whatever the largest tensor (`python -m lab bench sharded-load` measures it)."""
    from torch.distributed.tensor import DTensor

    model.to_empty(device=device)
    with CheckpointSource(path) as source, torch.no_grad():
        for name, p in model.named_parameters():
            if isinstance(p, DTensor):
                source.read_into(name, p.to_local(), local_box(p))
            else:
                source.read_into(name, p)
        # The aux-free expert biases are buffers, replicated on every process (lab.moe): read whole.
        for name, bias in source.expert_biases().items():
            model.get_buffer(name).copy_(bias)
    return model


def adamw(model, lr: float, *, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8,
          fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm weights and biases are not decayed), over the
    parameters that train: a frozen one (requires_grad=False, `lab.train.trainable`) gets no state."""
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim >= 2]
    no_decay = [p for p in trained if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **({"fused": True} if fused else {}))


def make_optimizer(model, recipe: Recipe) -> torch.optim.AdamW:
    """The recipe's AdamW (`adamw`).

    `hardware.fused_optimizer` (auto: on CUDA) takes the fused kernel: one launch for all parameters
    instead of several per tensor; the same update up to rounding.
    """
    o = recipe.optim
    device_type = next(model.parameters()).device.type
    fused = recipe.hardware.switch(recipe.hardware.fused_optimizer, device_type)
    return adamw(model, o.lr, weight_decay=o.weight_decay, betas=o.betas, eps=o.eps, fused=fused)
