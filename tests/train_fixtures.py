"""A tiny recipe for the training tests: a model that trains a step in a few milliseconds on the real data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

TINY = {
    "run": "test",
    "seed": 0,
    "model": {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "max_seq_len": 64},
    "data": {"seq_len": 32, "batch_size": 4},
    "optim": {"lr": 1e-2, "warmup_steps": 3},
    "train": {"max_steps": 10, "eval_every": 5, "eval_sequences": 2, "save_every": 5, "log_every": 1,
              "sample_tokens": 4},
}


def tiny_recipe(**sections) -> dict:
    """TINY with some keys changed: tiny_recipe(train={"max_steps": 4}, model={"n_experts": 4})."""
    recipe = copy.deepcopy(TINY)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key].update(value)
        else:
            recipe[key] = value
    return recipe


def records(run_dir: Path, event: str) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]
