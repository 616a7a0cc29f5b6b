"""The training loop: one code path from a 2-core laptop to FSDP2 on many GPUs.

Each optimizer step takes `grad_accum` micro-batches; micro-batch m of step s is batch
`(s - 1) * grad_accum + m` of `lab.data.TrainBatches`, a pure function of the seed and that index, so
a resumed run sees exactly the data it would have seen (the data position is the step). The loss is
the model's: the LM loss plus the MoE auxiliary losses times their config coefficients. The learning
rate is a function of the step (`lab.train.schedule`). Invariant: N steps, then --resume to M steps,
gives the same weights and losses as M steps straight (bitwise on one CPU process).
"""

from __future__ import annotations

import contextlib
import functools
import math
import shutil
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lab import distributed
from lab.checkpoint import hf_model_type
from lab.config import dtype_name
from lab.distributed import DistInfo
from lab.errors import LabError
from lab.expert_parallel import check_expert_parallel
from lab.flops import active_parameters, flops_per_token, mfu
from lab.msg_masks import mask_ramp, ramp_to, with_ramp
from lab.train import state as ckpt
from lab.train.evaluate import greedy_samples, validation_eval
from lab.train.metrics import MetricsWriter, environment, read_meta, truncate_metrics, write_meta
from lab.train.recipe import Recipe, load_recipe
from lab.train.schedule import learning_rate
from lab.train.setup import base_config, build_model, check_run_dir, load_data, make_optimizer, place_model
from lab.train.sharded_checkpoint import ShardWriter
from lab.train.lock import RunLock
from lab.heap import keep_freed_memory
from lab.train.signals import StopFlag, TrainingStopped
from lab.train.step import train_step
from lab.train.trainable import freeze_all_but, trained_layers, trained_parameters


def train(recipe, out_dir, *, max_steps: int | None = None, resume: bool = False, init_from=None,
          progress: bool = True) -> dict:
    """Train as `recipe` says, writing the run to `out_dir`; returns a summary of the last step.

    `max_steps` stops after that step (default: the recipe's train.max_steps); the schedule still spans
    the recipe's train.max_steps, so a run cut short and resumed equals the uncut run. `resume`
    continues the run in `out_dir` from its newest complete checkpoint. `init_from` (a Hugging Face
    directory) overrides the recipe's model. Raises TrainingStopped after a SIGINT or SIGTERM, once the
    step under way is checkpointed.
    """
    recipe = load_recipe(recipe)
    if init_from is not None:
        recipe = recipe.replace(init_from=str(init_from))
    stop_at = recipe.train.max_steps if max_steps is None else max_steps
    if not isinstance(stop_at, int) or stop_at <= 0:
        raise LabError(f"max_steps must be a positive integer, got {stop_at!r}")
    # A process group the caller joined (lab.pipeline trains several runs in one torchrun) outlives this
    # run: torch cannot join a group again once it has left it.
    callers = torch.distributed.is_available() and torch.distributed.is_initialized()
    info = distributed.setup(recipe.hardware.device)
    keep_freed_memory()  # each step's large tensors from freed memory, not fresh pages (lab.heap)
    try:
        return _Run(recipe, Path(out_dir), info, stop_at, resume, progress).run()
    finally:
        if not callers:
            distributed.teardown(info)


def remove_made(directory: Path, keep_dir: bool) -> None:
    """Remove what a failed fresh run wrote into `directory` (which was empty or absent before it)."""
    if not keep_dir:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for path in directory.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class _Run:
    def __init__(self, recipe: Recipe, out: Path, info: DistInfo, stop_at: int, resume: bool, progress: bool):
        # Every check before anything is written.
        self.recipe, self.out, self.info, self.stop_at, self.progress = recipe, out, info, stop_at, progress
        self.resume = resume
        self.resume_from = check_run_dir(out, recipe, resume)
        # A fresh run that fails before its first checkpoint takes away what it made (nothing to resume).
        self.fresh_dir = not resume
        self.existed = out.exists()
        self.lock = RunLock(out)
        self.checkpoint: Path | None = self.resume_from
        # Under torchrun the shards of a checkpoint are written in the background: the one still being written.
        self.pending: ckpt.PendingCheckpoint | None = None
        self.shard_writer = ShardWriter()
        self.cfg = base_config(recipe)
        check_expert_parallel(recipe.hardware.expert_parallel, self.cfg, info.world_size)
        self.trained_layers = trained_layers(recipe, self.cfg)  # None: all
        self.data = load_data(recipe, self.cfg, info)
        distributed.barrier(info)  # no process writes before every process has checked

    # ------------------------------------------------------------------ set-up
    def _prepare(self) -> None:
        recipe, info = self.recipe, self.info
        model = build_model(recipe, self.cfg, self.resume_from, keep_meta=info.sharded)
        self.cfg = model.config
        if info.sharded and mask_ramp(self.cfg) is not None:
            raise LabError("the model is on a masked-growth ramp (config.json msg_masks): train it on one process "
                           "until its masks fold (FSDP does not shard the masks)")
        self.save_cfg = self.cfg.replace(dtype=dtype_name(next(model.parameters()).dtype))
        self.save_cfg.extra["eos_token_id"] = self.data.eos  # `lab generate` stops at the end of a document
        self.n_params = model.num_parameters()
        # Frozen before sharding and before the optimizer is made, which then holds state for what trains only.
        self.n_trained = (trained_parameters(model) if self.trained_layers is None
                          else freeze_all_but(model, self.trained_layers))
        bf16 = recipe.train.precision == "bf16"
        self.model = place_model(model, recipe, info)
        self.autocast = contextlib.nullcontext
        if bf16 and not (info.sharded and info.device.type == "cuda"):  # FSDP's policy casts on GPU
            self.autocast = functools.partial(torch.autocast, info.device.type, dtype=torch.bfloat16)
        self.optimizer = make_optimizer(self.model, recipe)
        spec = recipe.data
        self.tokens_per_step = spec.batch_size * spec.grad_accum * spec.seq_len
        self.flops_per_token = flops_per_token(self.cfg, spec.seq_len)
        self.peak = recipe.hardware.peak_flops
        self.step, self.tokens = 0, 0
        if self.resume_from is not None:
            scalars = ckpt.resume_training_state(self.resume_from, self.model, self.optimizer, info)
            self.step, self.tokens = scalars["step"], scalars["tokens"]
        self._ramp_masks()
        self.metrics = MetricsWriter(self.out, recipe.run, recipe.stage, enabled=info.is_main)
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
            # Checked again under the lock: another writer may have begun between the first check and now.
            if not self.resume and read_meta(self.out) is not None:
                raise LabError(f"{self.out}: another run began there meanwhile; choose another --out")
            ckpt.remove_partial(self.out)
            if self.resume_from is None:
                truncate_metrics(self.out, -1)  # a run that died before its first checkpoint starts over
                write_meta(self.out, self._meta())
            else:
                truncate_metrics(self.out, self.step)
                self._record("resume", from_step=self.step)
        self.last_train: dict = {}
        self.last_eval: dict = {}

    def _meta(self) -> dict:
        recipe = self.recipe
        return {"run": recipe.run, "stage": recipe.stage, "recipe": recipe.to_dict(), "recipe_digest": recipe.digest(),
                "model": self.cfg.to_dict(), "model_type": hf_model_type(self.cfg),
                "parameters": self.n_params, "active_parameters": active_parameters(self.cfg),
                "trainable": recipe.train.trainable, "trained_parameters": self.n_trained,
                "trained_layers": None if self.trained_layers is None else list(self.trained_layers),
                "flops_per_token": self.flops_per_token, "tokens_per_step": self.tokens_per_step,
                "peak_flops": self.peak, "environment": environment(self.info.device, self.info.world_size),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def _model_card(self) -> str:
        from lab.checkpoint.model_card import model_card

        recipe = self.recipe
        details = {"steps": self.step, "training tokens": self.tokens}
        if self.last_eval:
            details["validation loss at the last evaluation"] = {d: round(v, 4) for d, v in self.last_eval.items()}
        details["recipe"] = recipe.to_dict()
        made = f"from `{recipe.init_from}`" if recipe.init_from else "from scratch"
        ramp = mask_ramp(self.save_cfg)
        if ramp is not None:  # a run cut short inside the ramp: the masks stay in config.json, for the lab to read
            made += (f", stopped on its masked-growth ramp (step {ramp.step} of {ramp.ramp_steps}): config.json's "
                     "msg_masks holds the masks, which the lab applies and transformers does not; train past the "
                     "ramp for a plain model")
        return model_card(title=recipe.run, summary=f"Trained with the lab ({recipe.stage} stage) {made}.",
                          cfg=self.save_cfg, model_type=hf_model_type(self.save_cfg), base_model=recipe.init_from,
                          tags=(recipe.stage,), details=details)

    def _record(self, event: str, **values) -> dict:
        return self.metrics.write(event, self.step, self.tokens, self.tokens * self.flops_per_token, **values)

    # ------------------------------------------------------------------ one step
    def _train_step(self) -> dict:
        recipe, info = self.recipe, self.info
        accum = recipe.data.grad_accum
        lr = learning_rate(self.step + 1, recipe.optim, recipe.train.max_steps)
        batches = [self.data.batches.batch(self.step * accum + micro, info.rank, info.world_size).to(info.device)
                   for micro in range(accum)]
        record = train_step(self.model, batches, self.optimizer, lr, grad_clip=recipe.optim.grad_clip,
                            autocast=self.autocast, info=info)
        self.step += 1
        self.tokens += self.tokens_per_step
        self._ramp_masks()
        if not math.isfinite(record["loss"]):
            raise LabError(f"the loss is {record['loss']} at step {self.step} (try a lower optim.lr)")
        return record

    def _ramp_masks(self) -> None:
        """MSG (lab.msg_masks): the masks of the current step, a function of the step, so a resumed run has
        the same; at the ramp's end they fold into the weights, and checkpoints are plain from then on."""
        if mask_ramp(self.model.config) is not None:
            ramp_to(self.model, self.step)
            self.save_cfg = with_ramp(self.save_cfg, mask_ramp(self.model.config))

    # ------------------------------------------------------------------ events
    def _evaluate(self) -> None:
        losses, loads = validation_eval(self.model, self.data.validation, self.info.device, self.autocast)
        self.last_eval = losses
        extra = {} if loads is None else {"tokens_per_expert_by_domain": loads}
        self._record("eval", val_loss=losses, val_loss_mean=sum(losses.values()) / len(losses), **extra)
        if self.recipe.train.sample_tokens and self.data.prompts:
            texts = greedy_samples(self.model, self.data.tokenizer, self.data.prompts, self.recipe.train.sample_tokens,
                                   self.info.device, self.data.eos, self.autocast)
            self._record("sample", prompts=self.data.prompts, samples=texts)

    def _save(self) -> None:
        """Checkpoint the current step (lab.train.state). On one process rank 0 writes it whole, now; under
        torchrun each process writes its own shards in the background, and the checkpoint completes in
        `_finish_save`: before the next one starts, before a stop or the final export, and after an error."""
        self._finish_save()
        # The data position: batches are a pure function of their index, so the next index is all it takes.
        scalars = {"tokens": self.tokens, "next_batch": self.step * self.recipe.data.grad_accum,
                   "recipe_digest": self.recipe.digest(), "world_size": self.info.world_size}
        if self.info.sharded:
            self.pending = ckpt.start_sharded_checkpoint(self.out, self.step, self.save_cfg, self.model, self.optimizer,
                                                         scalars, self.data.tokenizer_dir, self.info, self.shard_writer)
            return
        model_state = distributed.full_model_state(self.model, self.info)
        optim_state = distributed.full_optimizer_state(self.model, self.optimizer, self.info)
        path = ckpt.save_checkpoint(self.out, self.step, self.save_cfg, model_state, optim_state, scalars,
                                    self.data.tokenizer_dir)
        self._saved(path, self.step, self.tokens)

    def _finish_save(self, *, after_error: bool = False) -> None:
        """Complete the checkpoint still being written, if any (every process calls it). After an error it
        takes no collective, and a checkpoint whose shards did not all reach the disk stays hidden."""
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        if after_error:
            with contextlib.suppress(Exception):  # the error under way is the one to report
                self._saved(pending.finish(self.info), pending.step, pending.scalars["tokens"], barrier=False)
            return
        self._saved(pending.finish(self.info), pending.step, pending.scalars["tokens"])

    def _saved(self, path: Path, step: int, tokens: int, *, barrier: bool = True) -> None:
        if self.info.is_main:
            ckpt.prune(self.out, self.recipe.train.keep_checkpoints)
            self.metrics.write("checkpoint", step, tokens, tokens * self.flops_per_token, path=str(path))
        if barrier:
            distributed.barrier(self.info)
        self.checkpoint = path

    def _summary(self) -> dict:
        return {"run": self.recipe.run, "stage": self.recipe.stage, "step": self.step, "tokens": self.tokens,
                "flops": self.tokens * self.flops_per_token, "loss": self.last_train.get("loss"),
                "lm_loss": self.last_train.get("lm_loss"), "tokens_per_s": self.last_train.get("tokens_per_s"),
                "val_loss": self.last_eval, "checkpoint": str(self.out / ckpt.FINAL), "out_dir": str(self.out)}

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        try:
            try:
                return self._run()
            finally:
                self._finish_save(after_error=True)  # a no-op unless the run failed with a save under way
        except LabError:
            # Only under the lock: what is there otherwise belongs to the process that holds it.
            if (self.fresh_dir and self.info.is_main and self.checkpoint is None and self.lock.held
                    and self.out.is_dir()):
                remove_made(self.out, keep_dir=self.existed)
            raise
        finally:
            self.lock.release()

    def _run(self) -> dict:
        with StopFlag() as stop:  # a signal during set-up stops the run after its first step
            self._prepare()
            if self.step == 0:
                self._evaluate()  # where the run starts: ln(vocab) for a fresh model, the source's loss for a grown one
            self._loop(stop)
            self._finish_save()
            if self.checkpoint is None or ckpt.checkpoint_dir(self.out, self.step) != self.checkpoint:
                self._save()  # e.g. resumed at or past stop_at
            if self.info.sharded:  # the step checkpoint holds shards: the model is gathered tensor by tensor
                ckpt.export_final(self.out, self.model, self.save_cfg, self.data.tokenizer_dir, self._model_card(),
                                  self.info)
            elif self.info.is_main:
                ckpt.publish_final(self.out, self.checkpoint, self._model_card())
            distributed.barrier(self.info)
        return self._summary()

    def _loop(self, stop: StopFlag) -> None:
        t = self.recipe.train
        bar = tqdm(total=self.stop_at, initial=min(self.step, self.stop_at), desc=self.recipe.run, unit="step",
                   disable=not (self.progress and self.info.is_main))
        window_tokens, window_time = 0, 0.0
        with bar:
            while self.step < self.stop_at:
                started = time.perf_counter()
                record = self._train_step()
                window_time += time.perf_counter() - started
                window_tokens += self.tokens_per_step
                if self.step % t.log_every == 0 or self.step == self.stop_at:
                    record["tokens_per_s"] = window_tokens / window_time
                    if self.peak is not None:
                        per_device = record["tokens_per_s"] / self.info.world_size
                        record["mfu"] = mfu(per_device, self.flops_per_token, self.peak)
                    self.last_train = self._record("train", **record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                    window_tokens, window_time = 0, 0.0
                bar.update(1)
                last = self.step == self.stop_at
                if last or (t.eval_every and self.step % t.eval_every == 0):
                    self._evaluate()
                stopping = self._stop_requested(stop)
                if last or stopping or (t.save_every and self.step % t.save_every == 0):
                    self._save()
                if stopping:
                    self._finish_save()  # the checkpoint the stop names is on disk before the process exits
                    self._record("stop", signal=stop.signal_name)
                    raise TrainingStopped(stop.signal_name, self.step, str(self.checkpoint))

    def _stop_requested(self, stop: StopFlag) -> bool:
        """Whether any process got a signal (all of them must stop at the same step)."""
        flag = torch.tensor([1.0 if stop.signal_name else 0.0])
        requested = distributed.all_reduce(flag, self.info, op="max").item() > 0
        if requested and stop.signal_name is None:
            stop.signal_name = "SIGTERM"  # another process got it
        return requested
