"""A run's record: `meta.json` (recipe, model, environment) and the append-only `metrics.jsonl`.

meta.json also says what the run trains: `trainable` (the recipe's train.trainable: "all" or
"new-blocks"), `trained_layers` (the decoder layers it trains; null: all of them) and
`trained_parameters` (how many parameters the optimizer updates; `parameters` when all train).

Every line of metrics.jsonl is one JSON object, one event. Every record carries:

    run, stage     the recipe's names
    event          "train" | "eval" | "sample" | "checkpoint" | "resume" | "stop"
    step           optimizer steps done (0 before the first)
    tokens         training tokens seen so far, all processes together
    flops          training FLOPs so far: tokens x flops_per_token (lab.flops, 6N + attention)
    time           seconds since the run (this process) started

and, by event:

    train       loss (what is minimised: lm_loss + aux_loss_coef * aux_loss + z_loss_coef * z_loss),
                lm_loss, lr, grad_norm (before clipping), tokens_per_s, mfu (only when a peak is known);
                for an MoE also aux_loss (load balancing, 1 per layer at perfect balance), z_loss
                (router z-loss), router_loss_aggregation ("sum" or "mean": how aux_loss and z_loss
                combine the MoE layers', lab.moe; under "sum" a balanced model logs aux_loss =
                n_moe_layers), router_entropy (nats, mean over layers), tokens_per_expert (a list per
                MoE layer of counts per expert, over the step's tokens x top_k), balance ("aux_loss",
                "aux_free" or "none", lab.moe: only under "aux_loss" does loss hold the aux_loss term;
                aux_loss is reported under all three), and under "aux_free" expert_bias (a list per MoE
                layer of the routing bias per expert, after this step's update: the bias the next step
                chooses experts with). Values are means over the step's micro-batches.
    eval        val_loss {domain: loss} on the fixed validation windows, val_loss_mean (mean over domains);
                for an MoE also tokens_per_expert_by_domain {domain: [counts per expert] per MoE layer}
                on those windows (every process evaluates the same windows: no reduction)
    sample      samples {domain: text}: greedy continuations of each domain's prompt (prompts {domain: text})
    checkpoint  path of the checkpoint written at this step
    resume      from_step: where a resumed run picked up
    stop        signal: the signal that stopped the run at this step (its checkpoint follows or precedes)

Rule for readers: a resumed run first drops every record with step > the checkpoint's step, so the
file never holds two records of one (event, step) from different attempts. Only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from lab.json_input import JSONInputError, read_json
from lab.runs import META_FILE, METRICS_FILE, parse_metrics
from lab.atomic_files import write_json_atomically, write_lines_atomically


class MetricsWriter:
    """Appends records to DIR/metrics.jsonl, one line each, flushed at once (a reader may be watching)."""

    def __init__(self, run_dir: Path, run: str, stage: str, enabled: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.base = {"run": run, "stage": stage}
        self.enabled = enabled
        self.started = time.perf_counter()

    def write(self, event: str, step: int, tokens: int, flops: float, **values) -> dict:
        record = {**self.base, "event": event, "step": step, "tokens": tokens, "flops": flops,
                  "time": round(time.perf_counter() - self.started, 3), **values}
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return record


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep only the complete records with step <= `step` (before resuming from checkpoint `step`)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in parse_metrics(path.read_bytes()).records if r.get("step", 0) <= step]
    write_lines_atomically(path, kept)


def environment(device: torch.device, world_size: int) -> dict:
    """What the run ran on, for meta.json."""
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(device),
           "world_size": world_size}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


def read_meta(run_dir: Path) -> dict | None:
    path = Path(run_dir) / META_FILE
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except JSONInputError:
        return {}


def write_meta(run_dir: Path, meta: dict) -> None:
    write_json_atomically(Path(run_dir) / META_FILE, meta)
