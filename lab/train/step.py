"""One optimizer step, the one every training loop of the lab takes: the trainer (lab.train.loop), the
notebooks' helper (lab.teach.loop) and the MFU benchmark (lab.bench.mfu).

The step sets the learning rate, runs forward and backward over its micro-batches (gradients averaged:
each micro-batch's loss is divided by their number), clips the gradient norm, steps the optimizer and
returns the step's record in the metrics schema (lab.train.metrics): the losses averaged over
micro-batches (and over processes in a sharded run), the learning rate, the gradient norm, and for an
MoE its auxiliary losses, router entropy and tokens per expert (summed). Under aux-loss-free balancing
(`balance: aux_free`) the step then moves every MoE layer's expert bias against that step's load
(`lab.train.balance`) and records the biases.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch

from lab import distributed
from lab.train.balance import expert_biases, update_expert_biases


def train_step(model, micro_batches: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer, lr: float, *,
               grad_clip: float = 0.0, autocast: Callable = contextlib.nullcontext,
               info: distributed.DistInfo | None = None) -> dict:
    """Train `model` one step on `micro_batches` (token ids, each its own labels); returns the record.

    `micro_batches` (at least one, on the model's device) make one step of gradient accumulation.
    `grad_clip` <= 0 means no clipping (the norm is still measured).
    With `info` of a sharded run, the losses are averaged and the expert counts summed over processes,
    before the expert biases (if any) move by them: every process keeps the same biases.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    accum = len(micro_batches)
    # The sums stay on the batches' device until the step ends: reading a loss on the host after each
    # micro-batch would wait for its backward, and the GPU would idle while the next forward is launched.
    sums = torch.zeros(5, device=micro_batches[0].device)  # loss, lm_loss, aux_loss, z_loss, router_entropy
    experts = None
    for ids in micro_batches:
        with autocast():
            out = model(ids, labels=ids)
        (out.loss / accum).backward()
        values = [out.loss, out.lm_loss]
        if out.aux_loss is not None:
            values += [out.aux_loss, out.z_loss, out.router_entropy]
            counts = out.tokens_per_expert.detach()
            experts = counts if experts is None else experts + counts
        sums[: len(values)] += torch.stack([v.detach().float() for v in values])
    clip = grad_clip if grad_clip > 0 else math.inf
    grad_norm = distributed.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    means = (sums / accum).cpu()  # the step's one wait for the device (the record holds Python numbers)
    if experts is not None:
        experts = experts.cpu()
    if info is not None:
        means = distributed.all_reduce(means, info)
    record = {"loss": means[0].item(), "lm_loss": means[1].item(), "lr": lr, "grad_norm": grad_norm.item()}
    if experts is not None:
        if info is not None:
            experts = distributed.all_reduce(experts, info, op="sum")
        update_expert_biases(model, experts, model.config.balance_bias_rate)  # a no-op unless aux_free
        # Summed losses grow with depth, and `loss` holds aux_loss under one balance only: the record says which.
        record.update(aux_loss=means[2].item(), z_loss=means[3].item(),
                      router_loss_aggregation=model.config.router_loss_aggregation, balance=model.config.balance,
                      router_entropy=means[4].item(), tokens_per_expert=experts.tolist())
        biases = expert_biases(model)
        if biases is not None:
            record["expert_bias"] = biases
    return record
