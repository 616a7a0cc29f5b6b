"""The AquilaMoE paper's Table 1 at toy scale: validation loss of six initialisations of a bigger model.

The paper grows M(24, 2048) (loss 2.97) into M(32, 4096): width-only FPI M(24, 4096) 2.97 (exact),
FPI + stacking 4.30, FPI + interpolation 3.31, AKI + stacking 9.56, AKI-Pro (interpolation) 7.81,
random init 12.22; after continued training AKI overtakes FPI (its Figure 3). Here a small dense model
trained with the tiny recipe (or a given checkpoint) is grown to twice its hidden size, heads and
intermediate size and half as many layers again, six ways, and each is evaluated on the shipped
corpus's validation split right after growth and after `--steps` steps of continued training with the
same recipe. The expected orderings: width-only FPI equals the source, FPI + interpolation is below
FPI + stacking, random init is worst.

On a GQA source plain AKI is refused (AquilaMoE's reason for AKI-Pro); the "AKI + stacking" row then
uses AKI with the GQA rule and stacking, so that it differs from AKI-Pro only in the depth order.

    python -m lab.experiments.growth_table1 --out runs/growth_table1 --steps 100
"""

from __future__ import annotations

import argparse
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from lab import paths
from lab.paper import TABLE1_LOSS

DEFAULT_RECIPE = paths.RECIPES_DIR / "tiny.yaml"
PAPER = TABLE1_LOSS


@dataclass
class Row:
    key: str
    label: str
    shape: str
    loss_grown: float
    loss_trained: float | None = None


def rows_to_grow(source, num_layers: int) -> list[tuple[str, str, dict]]:
    """(key, label, plan_growth arguments) of the five grown rows (random init is the sixth)."""
    wide = dict(dim=2 * source.dim, n_heads=2 * source.n_heads, ffn_dim=2 * source.ffn_dim)
    deep = dict(wide, n_layers=num_layers)
    mha = source.n_kv_heads == source.n_heads
    return [("fpi-width", "FPI, width only", dict(wide, method="fpi")),
            ("fpi-stack", "FPI + stacking", dict(deep, method="fpi", depth="stack")),
            ("fpi-interpolate", "FPI + interpolation", dict(deep, method="fpi", depth="interpolate")),
            ("aki-stack", "AKI + stacking" if mha else "AKI (GQA rule) + stacking",
             dict(deep, method="aki" if mha else "aki-pro", depth="stack")),
            ("aki-pro", "AKI-Pro (interpolation)", dict(deep, method="aki-pro", depth="interpolate"))]


def shape(cfg) -> str:
    return f"M({cfg.n_layers}, {cfg.dim})"


@torch.no_grad()
def validation_loss(checkpoint: Path, seq_len: int = 128, max_sequences: int = 8) -> float:
    """Mean over domains of the LM loss on the shipped validation windows (fp32)."""
    import lab
    from lab.data import validation_windows

    model = lab.load_pretrained(checkpoint, dtype=torch.float32)
    tokenizer = checkpoint / "tokenizer.json"
    windows = validation_windows(seq_len, max_sequences, tokenizer=tokenizer if tokenizer.is_file() else None)
    losses = [model(batch, labels=batch).lm_loss.item() for batch in windows.values()]
    return sum(losses) / len(losses)


def final_checkpoint(summary: dict, run_dir: Path) -> Path:
    """Where a training run left its last checkpoint: the summary's word, else DIR/final."""
    return Path(summary.get("checkpoint") or run_dir / "final")


def short_recipe(recipe_path: Path, run: str, stage: str, steps: int | None):
    """The recipe, renamed, with its schedule spanning `steps` (None: the recipe's own): a run cut short
    would stop in the middle of its learning-rate schedule."""
    from lab.train import load_recipe

    recipe = load_recipe(recipe_path)
    if steps is None:
        return recipe.replace(run=run, stage=stage)
    warmup = min(recipe.optim.warmup_steps, steps // 5)
    return recipe.replace(run=run, stage=stage, optim={"warmup_steps": warmup},
                          train={"max_steps": steps, "eval_every": steps, "save_every": steps})


def continue_training(recipe_path: Path, init: Path, run_dir: Path, steps: int, run: str) -> Path:
    from lab.train import train

    recipe = short_recipe(recipe_path, f"table1-{run}", "scale-up", steps)
    return final_checkpoint(train(recipe, run_dir, init_from=init, progress=True), run_dir)


def random_init(target, path: Path, tokenizer_dir: Path, seed: int) -> Path:
    import lab

    torch.manual_seed(seed)
    lab.save_pretrained(lab.DecoderLM(target.replace(dtype="float32")), path, tokenizer_dir=tokenizer_dir)
    return path


def run(out: Path, *, source: Path | None = None, recipe: Path = DEFAULT_RECIPE, steps: int = 100,
        source_steps: int | None = None, num_layers: int | None = None, seq_len: int = 128,
        seed: int = 0, report=print) -> list[Row]:
    """Train (or take) the source, grow it six ways, evaluate, continue training each for `steps` steps."""
    from lab.checkpoint import read_config
    from lab.growth import half_again_deeper, plan_growth
    from lab.derive import grow_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    if source is None:
        from lab.train import train

        report(f"training the source with {recipe}")
        shutil.rmtree(out / "source", ignore_errors=True)
        summary = train(short_recipe(recipe, "table1-source", "pretrain", source_steps), out / "source")
        source = final_checkpoint(summary, out / "source")
    cfg, _ = read_config(source)
    num_layers = num_layers or half_again_deeper(cfg.n_layers)
    rows = [Row("source", "source (original)", shape(cfg), validation_loss(source, seq_len))]
    report(f"source {shape(cfg)}: validation loss {rows[0].loss_grown:.4f}")
    grown: dict[str, Path] = {}
    for key, label, request in rows_to_grow(cfg, num_layers):
        path = out / "grown" / key
        shutil.rmtree(path, ignore_errors=True)
        plan = plan_growth(cfg, seed=seed, **request)
        grown[key] = grow_checkpoint(source, path, plan)
        rows.append(Row(key, label, shape(plan.target), validation_loss(path, seq_len)))
        report(f"{label} {shape(plan.target)}: validation loss {rows[-1].loss_grown:.4f}")
    target = plan.target  # the deep target of the last row
    path = out / "grown" / "random"
    shutil.rmtree(path, ignore_errors=True)
    grown["random"] = random_init(target, path, source, seed)
    rows.append(Row("random", "random init", shape(target), validation_loss(path, seq_len)))
    report(f"random init {shape(target)}: validation loss {rows[-1].loss_grown:.4f}")
    if steps > 0:
        for row in rows[1:]:
            run_dir = out / "trained" / row.key
            shutil.rmtree(run_dir, ignore_errors=True)
            trained = continue_training(recipe, grown[row.key], run_dir, steps, row.key)
            row.loss_trained = validation_loss(trained, seq_len)
            report(f"{row.label} after {steps} steps: validation loss {row.loss_trained:.4f}")
    return rows


def format_table(rows: list[Row], steps: int) -> str:
    def cell(x: float | None) -> str:
        return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"

    trained = steps > 0
    head = ["method", "model", "val loss after growth"] + ([f"after {steps} steps"] if trained else [])
    lines = ["| " + " | ".join(head + ["paper, after growth"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in rows:
        cells = [r.label, r.shape, cell(r.loss_grown)]
        if trained:
            cells.append("" if r.key == "source" else cell(r.loss_trained))
        lines.append("| " + " | ".join(cells + [f"{PAPER[r.key]:.2f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.experiments.growth_table1",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/growth_table1"), help="working directory")
    parser.add_argument("--source", type=Path, help="a trained dense checkpoint (default: train one with --recipe)")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="training recipe (default: tiny)")
    parser.add_argument("--steps", type=int, default=100, help="continued-training steps per row (0: none)")
    parser.add_argument("--source-steps", type=int, help="training steps of the source (default: the recipe's)")
    parser.add_argument("--num-layers", type=int, help="layers of the deep target (default: 1.5x the source's)")
    parser.add_argument("--seq-len", type=int, default=128, help="validation window length")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from lab.errors import LabError

    try:
        rows = run(args.out, source=args.source, recipe=args.recipe, steps=args.steps, source_steps=args.source_steps,
                   num_layers=args.num_layers, seq_len=args.seq_len, seed=args.seed)
    except LabError as e:
        print(f"error: {e}")
        return 2
    print()
    print(format_table(rows, args.steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
