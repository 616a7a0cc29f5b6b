"""A few training steps of a model held in memory, for notebooks that watch something change step by step.

`lab.train.train` is the real loop (recipes, run directories, checkpoints, resume); a notebook that
wants to look inside the model after every step (are the copies still equal? where do tokens go?)
needs the model in its hands instead. `train_steps` is that: AdamW (weight decay on matrices only, as
`lab.train`), gradient clipping at 1, batches from `lab.data.TrainBatches` (a pure function of the
step, so two runs from the same model see the same data), and records shaped like those of a
`metrics.jsonl` (event "train": `step`, `tokens`, `flops`, `loss`, `lm_loss`, and for an MoE `aux_loss`,
`z_loss`, `router_loss_aggregation`, `router_entropy`, `tokens_per_expert`, and under aux-loss-free balancing
`expert_bias`; event "eval": `val_loss`, `val_loss_mean`), so that `as_run` hands them to the same plot builders
as a run read from disk (`lab.plots.curves`). As in `lab.train`, a model grown by masked structural growth
(`lab.msg_masks`) has its masks moved one ramp step after every optimizer step, and folded at the ramp's end.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from lab.data import TrainBatches, chosen_domains, load_tokens
from lab.data import validation_windows as data_validation_windows
from lab.train.step import train_step
from lab.flops import flops_per_token
from lab.msg_masks import mask_ramp, ramp_to
from lab.runs import MetricsLog, Run
from lab.teach.fast import pick, progress_enabled
from lab.train.evaluate import validation_losses
from lab.train.setup import adamw


@functools.lru_cache(maxsize=2)
def corpus_tokens(split: str) -> dict[str, torch.Tensor]:
    """The shipped corpus's `split`, one token stream per domain, encoded once per process."""
    return load_tokens(split)


def train_batches(seq_len: int, batch_size: int, seed: int = 0, domains: Sequence[str] | None = None) -> TrainBatches:
    """Batches from the shipped train split: every domain, or only `domains` (continued training on new data)."""
    tokens = corpus_tokens("train")
    tokens = {d: tokens[d] for d in chosen_domains(tokens, domains)}
    return TrainBatches(tokens, seq_len, batch_size, seed)


def validation_windows(seq_len: int, n_per_domain: int = 4) -> dict[str, torch.Tensor]:
    """lab.data.validation_windows on the shipped split, encoded once per notebook kernel."""
    return data_validation_windows(seq_len, n_per_domain, tokens=corpus_tokens("validation"))


def val_loss(model, seq_len: int = 64, n_per_domain: int = 4) -> dict[str, float]:
    """LM loss per domain on the validation windows, plus their mean under "mean"."""
    losses = validation_losses(model, validation_windows(seq_len, n_per_domain), torch.device("cpu"))
    return {**losses, "mean": sum(losses.values()) / len(losses)}


def train_steps(model, steps: int, *, lr: float = 3e-3, warmup: int = 0, batch_size: int | None = None, seq_len: int = 64,
                seed: int = 0, first_step: int = 0, tokens: int = 0, flops: float = 0.0, eval_every: int = 0,
                on_step: Callable[[int, object, dict], None] | None = None, desc: str = "train",
                optimizer: torch.optim.Optimizer | None = None, eval_per_domain: int = 4,
                domains: Sequence[str] | None = None) -> list[dict]:
    """Train `model` in place for `steps` steps; a "train" record per step (and `on_step(step, model, record)`).

    The learning rate rises linearly over `warmup` steps, then stays at `lr`. `first_step`, `tokens`
    and `flops` continue the counters of an earlier stage (a pipeline's cumulative axes); batch `i` of
    the data is step `first_step + i`. With `eval_every` N, an "eval" record comes before the first step
    and after every N-th (and the last), on `eval_per_domain` validation windows per domain. `batch_size`
    defaults to 8 sequences, 4 under `LAB_FAST`. `domains` trains on those domains' text only (default: all).
    Parameters with `requires_grad=False` (`lab.train.trainable.freeze_all_but`) get no optimizer state and
    do not move. An MSG-grown model's ramp continues from the step its config records.
    """
    batch_size = batch_size or pick(8, 4)
    cfg = model.config
    per_token = flops_per_token(cfg, seq_len)
    data = train_batches(seq_len, batch_size, seed, domains)
    optimizer = optimizer or adamw(model, lr, weight_decay=0.1)  # lab.train's AdamW at a fixed lr
    ramp = mask_ramp(cfg)
    ramp_start = ramp.step if ramp is not None else 0
    model.train()
    records = []

    def evaluate(step: int) -> None:
        losses = val_loss(model, seq_len, eval_per_domain)
        mean = losses.pop("mean")
        records.append({"event": "eval", "step": step, "tokens": tokens, "flops": flops, "val_loss": losses,
                        "val_loss_mean": mean})

    if eval_every:
        evaluate(first_step)
    for i in tqdm(range(steps), desc=desc, unit="step", disable=not progress_enabled(), leave=False):
        ids = data.batch(first_step + i)
        step_lr = lr * min(1.0, (i + 1) / warmup) if warmup else lr
        record = train_step(model, [ids], optimizer, step_lr, grad_clip=1.0)
        if ramp is not None:  # the masks of the next step (a function of the step, as in lab.train); folded at 1
            ramp_to(model, ramp_start + i + 1)
        tokens += ids.numel()
        flops += ids.numel() * per_token
        record = {"event": "train", "step": first_step + i + 1, "tokens": tokens, "flops": flops, **record}
        records.append(record)
        if eval_every and ((i + 1) % eval_every == 0 or i + 1 == steps):
            evaluate(first_step + i + 1)
        if on_step is not None:
            on_step(first_step + i + 1, model, record)
    model.eval()
    return records


def as_run(name: str, records: list[dict], stage: str | None = None) -> Run:
    """Records of `train_steps` (one stage or several concatenated) as a `lab.runs.Run` for the plot
    builders; `stage` labels records that carry none."""
    if stage is not None:
        records = [{"stage": stage, **r} for r in records]
    return Run(name, Path(name), {}, MetricsLog(records=list(records)))


def events(records: list[dict], kind: str = "train") -> list[dict]:
    return [r for r in records if r.get("event") == kind]
