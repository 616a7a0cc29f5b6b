"""Synthetic run directories for the dashboard's and the plot builders' tests.

The records follow `lab/train/metrics.py` (run, stage, event, step, tokens, flops, time and each
event's values). A pipeline run counts step, tokens and FLOPs across stages and writes a
`transition` record at each boundary; its MoE stage reports tokens_per_expert per layer.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

DOMAINS = ("english", "chinese", "code", "arithmetic")


def pipeline_records(name: str = "pipe", *, stages=("preparation", "scale-up", "scale-out"), steps: int = 12,
                     moe_stages=("scale-out",), n_moe_layers: int = 2, n_experts: int = 4, seed: int = 0,
                     eval_every: int = 4, domain_load: bool = False) -> list[dict]:
    rng = random.Random(seed)
    records, step, tokens, flops, t = [], 0, 0, 0.0, 0.0
    per_token = {s: 6e6 * (i + 1) for i, s in enumerate(stages)}
    for i, stage in enumerate(stages):
        if i:
            records.append({"run": name, "stage": stage, "event": "transition", "step": step, "tokens": tokens,
                            "flops": flops, "time": t, "from": stages[i - 1], "to": stage})
        for _ in range(steps):
            step += 1
            tokens += 2048
            flops += 2048 * per_token[stage]
            t += 0.5
            loss = 8.0 * math.exp(-step / 20) + 2.0 + 0.05 * rng.random()
            rec = {"run": name, "stage": stage, "event": "train", "step": step, "tokens": tokens, "flops": flops,
                   "time": round(t, 3), "loss": loss, "lm_loss": loss - 0.01, "lr": 1e-3, "grad_norm": 1.0,
                   "tokens_per_s": 4096.0 / (i + 1)}
            if stage in moe_stages:
                rec.update(aux_loss=1.0 + 0.1 * rng.random(), z_loss=0.5 * rng.random(),
                           router_entropy=math.log(n_experts) * 0.9,
                           tokens_per_expert=[[rng.randint(100, 2000) for _ in range(n_experts)]
                                              for _ in range(n_moe_layers)])
            records.append(rec)
            if step % eval_every == 0:
                val = {d: loss + 0.1 * k for k, d in enumerate(DOMAINS)}
                ev = {"run": name, "stage": stage, "event": "eval", "step": step, "tokens": tokens, "flops": flops,
                      "time": t, "val_loss": val, "val_loss_mean": sum(val.values()) / len(val)}
                if domain_load and stage in moe_stages:
                    ev["tokens_per_expert_by_domain"] = {
                        d: [[rng.randint(10, 200) for _ in range(n_experts)] for _ in range(n_moe_layers)]
                        for d in DOMAINS}
                records.append(ev)
    return records


def write_run(directory: Path, records: list[dict], meta: dict | None = None, tail: str = "") -> Path:
    """A run directory with metrics.jsonl (plus `tail` appended raw: a malformed or partial line)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (directory / "metrics.jsonl").write_text(lines + tail, encoding="utf-8")
    (directory / "meta.json").write_text(json.dumps(meta or {"recipe": {"run": directory.name}}), encoding="utf-8")
    return directory


def runs_root(root: Path) -> Path:
    """A runs directory like data/runs: a pipeline, its baseline and two routing variants."""
    write_run(root / "efficientscale-tiny", pipeline_records("efficientscale-tiny", domain_load=True),
              meta={"world_size": 1})
    write_run(root / "efficientscale-tiny-baseline",
              pipeline_records("efficientscale-tiny-baseline", stages=("from scratch",), steps=36,
                               moe_stages=("from scratch",)))
    for k, variant in enumerate(("topk-softmax", "softmax-topk")):
        write_run(root / "routing" / variant,
                  pipeline_records(variant, stages=("scale-out",), steps=10, seed=k + 1))
    return root
