"""Training throughput of the tiny recipes: tokens per second of `lab.train.train` itself.

Each recipe runs for a few steps, in a process of its own, in a temporary directory with evaluation,
samples and periodic checkpoints off (the last step still evaluates and saves, outside the timed
windows), logging every `window` steps. The train records' `tokens_per_s` cover the optimizer steps
only; the first window holds the warm-up and is dropped, the median of the others is reported. The recipes run one after
the other (a run cannot be interleaved with another), so this is a throughput, not a ratio.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

RECIPES = ("recipes/tiny.yaml", "recipes/tiny-moe.yaml")


def _tokens_per_s(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["tokens_per_s"] for r in map(json.loads, lines) if r["event"] == "train"]


def measure(recipe_path: str, steps: int, window: int, workdir: str | None = None, quick: bool = False) -> dict:
    """Train `recipe_path` for `steps` steps; tokens/s per window of `window` steps, median after the first."""
    from lab.flops import active_parameters
    from lab.train import load_recipe, train

    recipe = load_recipe(recipe_path)
    changes = {"train": {"eval_every": 0, "save_every": 0, "sample_tokens": 0, "log_every": window,
                         "eval_sequences": 1}}
    if quick:  # a smoke run: the recipe's shape, but a toy model
        small = {"dim": 32, "head_dim": 8, "n_layers": 1, "ffn_dim": 64, "moe_ffn_dim": 32}
        changes["model"] = {**recipe.model.to_dict(), **small, "moe_layers": None}
        changes["data"] = {"seq_len": 32, "batch_size": 2}
    recipe = recipe.replace(**changes)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        run_dir = Path(tmp) / "run"
        train(recipe, run_dir, max_steps=steps, progress=False)
        rates = _tokens_per_s(run_dir)
    timed = rates[1:] or rates  # the first window includes the warm-up
    spec = recipe.data
    return {"recipe": recipe_path, "run": recipe.run, "steps": steps, "window": window,
            "tokens_per_step": spec.batch_size * spec.grad_accum * spec.seq_len,
            "parameters": _parameters(recipe.model), "active_parameters": active_parameters(recipe.model),
            "tokens_per_s": statistics.median(timed), "windows_tokens_per_s": rates}


def _parameters(cfg) -> int:
    from lab.model import DecoderLM

    with torch.device("meta"):
        return DecoderLM(cfg).num_parameters()


# Each recipe trains in a process of its own, as `python -m lab train` would: in the process of `make bench`,
# after the model benchmark (transformers' models, their allocations, oneDNN's cache of their shapes), the
# tiny recipe measured 11.5-18k tokens/s, falling window after window, against 19-22k in a fresh process.
_CHILD = """
import json, sys, torch
from lab.bench.training_speed import measure
recipe, steps, window, workdir, quick, threads = json.loads(sys.argv[1])
torch.set_num_threads(threads)
print(json.dumps(measure(recipe, steps, window, workdir, quick)))
"""


def measure_in_child(recipe_path: str, steps: int, window: int, workdir: str | None, quick: bool,
                     threads: int) -> dict:
    """`measure` in a fresh Python process with `threads` intra-op threads."""
    args = json.dumps([recipe_path, steps, window, workdir, quick, threads])
    done = subprocess.run([sys.executable, "-c", _CHILD, args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"training {recipe_path} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(steps: int = 80, window: int = 10, threads: int = 2, quick: bool = False, workdir: str | None = None) -> dict:
    """Both tiny recipes, each in its own process; a JSON-able report of their training tokens/s."""
    if quick:
        steps, window = 4, 2
    results = [measure_in_child(r, steps, window, workdir, quick, threads) for r in RECIPES]
    return {"threads": threads, "torch": torch.__version__, "precision": "fp32", "recipes": results}


def format_report(r: dict) -> str:
    lines = [f"training throughput of the tiny recipes (lab.train), fp32, {r['threads']} threads", ""]
    lines.append(f"{'recipe':<24} {'params':>8} {'active':>8} {'tokens/s':>10}")
    for x in r["recipes"]:
        lines.append(f"{x['recipe']:<24} {x['parameters'] / 1e6:>7.2f}M {x['active_parameters'] / 1e6:>7.2f}M "
                     f"{x['tokens_per_s']:>10.0f}")
    lines.append(f"(median over windows of {r['recipes'][0]['window']} steps, the first dropped)")
    return "\n".join(lines)
