"""Shipped pretrained sources: small dense models the growth and upcycling lessons start from.

    python -m lab sources export runs/sources/source-deep --out data/sources/source-deep
    python -m lab sources list

A source is a finished training run (recipes/source-*.yaml on the big corpus) exported as a Hugging
Face directory: bf16 safetensors, the shipped tokenizer files, and a `README.md` model card with the
recipe, the tokens seen and the validation losses measured on the shipped weights. Its training
curve goes to `data/runs/sources/<name>/` as a reference run.

Validation losses are measured two ways on the shipped corpus's validation split (`lab.data`):
- `full`: every complete window of 256 tokens of each domain's validation stream, the mean per domain,
  then the mean over domains (the figure the sources are judged by);
- `eval-8x128`: the first 8 windows of 128 tokens of each domain, the training loop's evaluation of
  the recipes that made the earlier reference runs, so the two compare.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import torch

from lab import data
from lab.errors import LabError

# The shipped sources, each made by recipes/<name>.yaml (`make sources`).
SOURCE_NAMES = ("source-deep", "source-shallow")
SOURCES_DIR = data.DATA_DIR / "sources"
SOURCE_RUNS_DIR = data.DATA_DIR / "runs" / "sources"
FULL_SEQ_LEN = 256


@torch.no_grad()
def shipped_validation_losses(model, seq_len: int = FULL_SEQ_LEN, max_sequences: int | None = None,
                              batch_size: int = 16) -> dict[str, float]:
    """Per domain, the mean next-token loss on the shipped validation windows, and their `mean`."""
    model.eval()
    losses = {}
    for domain, windows in data.validation_windows(seq_len, max_sequences).items():
        total = 0.0
        for i in range(0, len(windows), batch_size):
            batch = windows[i:i + batch_size]
            total += model(batch, labels=batch).lm_loss.item() * len(batch)
        losses[domain] = total / len(windows)
    losses["mean"] = sum(losses[d] for d in data.DOMAINS if d in losses) / sum(d in losses for d in data.DOMAINS)
    return losses


def measure(checkpoint: Path) -> dict:
    """The validation losses of a checkpoint's weights (read in fp32), both ways (see the module docstring)."""
    import lab

    model = lab.load_pretrained(checkpoint, dtype=torch.float32)
    full = shipped_validation_losses(model, min(FULL_SEQ_LEN, model.config.max_seq_len))
    return {"full": full, "eval-8x128": shipped_validation_losses(model, min(128, model.config.max_seq_len), 8)}


def _training_summary(run_dir: Path) -> dict:
    from lab.runs import load_run

    run = load_run(run_dir)
    train = run.events("train")
    evals = run.events("eval")
    if not train:
        raise LabError(f"{run_dir}: no train records in metrics.jsonl")
    last = train[-1]
    return {"steps": last["step"], "tokens": last["tokens"], "flops": last["flops"],
            "hours": last["time"] / 3600, "final_train_loss": last["loss"],
            "eval_curve": [(e["step"], round(e["val_loss_mean"], 4)) for e in evals if "val_loss_mean" in e]}


def model_card(name: str, cfg, parameters: int, recipe_text: str, summary: dict, losses: dict) -> str:
    from lab.growth import half_again_deeper

    full, short = losses["full"], losses["eval-8x128"]
    rows = "\n".join(f"| {d} | {full[d]:.4f} | {short[d]:.4f} |" for d in data.DOMAINS)
    curve = ", ".join(f"{s}: {v}" for s, v in summary["eval_curve"])
    return f"""# {name}

A small dense decoder of the EfficientScale Lab, pretrained to be grown (Scale-Up) and upcycled
(Scale-Out) in the lessons. Aquila-style: q/k/v bias, grouped-query attention, untied embeddings,
SwiGLU, RMSNorm, RoPE; saved as a `qwen2` checkpoint (bf16 weights), which `transformers` opens.

| | |
|---|---|
| shape | M({cfg.n_layers}, {cfg.dim}): {cfg.n_layers} layers, hidden {cfg.dim}, {cfg.n_heads} query heads, {cfg.n_kv_heads} key/value heads of {cfg.head_dim}, MLP {cfg.ffn_dim} |
| parameters | {parameters:,} |
| vocabulary | {cfg.vocab_size} (the lab's byte-level BPE, `tokenizer.json`) |
| trained on | the big corpus (`python -m lab data build`, `data/corpus-manifest.json`): English documentation, classical Chinese poetry, Python code, arithmetic |
| steps, tokens | {summary['steps']:,} steps, {summary['tokens']:,} tokens |
| training compute | {summary['flops']:.3e} FLOPs, {summary['hours']:.2f} hours of wall-clock time on the machine that trained it |

## Validation loss (nats per token, the shipped corpus's validation split, bf16 weights read in fp32)

| domain | every 256-token window | first 8 windows of 128 |
|---|---:|---:|
{rows}
| **mean** | **{full['mean']:.4f}** | **{short['mean']:.4f}** |

The mean over domains during training (training loop's evaluation, 16 windows of 256 per domain),
by step: {curve}.

## Use

```python
import lab, transformers
model = lab.load_pretrained("data/sources/{name}")
hf = transformers.AutoModelForCausalLM.from_pretrained("data/sources/{name}")
tokenizer = transformers.AutoTokenizer.from_pretrained("data/sources/{name}")
```

```
python -m lab grow data/sources/{name} OUT --method aki-pro --hidden-size {2 * cfg.dim} --num-heads {2 * cfg.n_heads} \\
    --intermediate-size {2 * cfg.ffn_dim} --num-layers {half_again_deeper(cfg.n_layers)} --depth interpolate
python -m lab upcycle data/sources/{name} OUT --num-experts 8 --top-k 2 --router-loss-aggregation sum
```

## Recipe

```yaml
{recipe_text.strip()}
```

## Licence of the training text

The corpus's sources and their licences are listed in `data/README.md` (PSF, BSD, PostgreSQL, GPL-2.0
documentation; MIT collection of public-domain classical poetry; generated arithmetic).
"""


def export_source(run_dir: str | Path, out: str | Path, *, recipe: str | Path | None = None,
                  overwrite: bool = False) -> dict:
    """Export a finished run as a shipped source; return its measured losses and training summary."""
    import lab
    from lab.checkpoint.io import check_output_dir, replace_dir
    from lab.run_export import export_run

    run_dir, out = Path(run_dir), Path(out)
    final = run_dir / "final"
    if not (final / "config.json").is_file():
        raise LabError(f"{run_dir}: no final/ checkpoint (the run has not finished; resume it first)")
    check_output_dir(out, overwrite)
    meta = json.loads((run_dir / "meta.json").read_text())
    name = out.name
    recipe_text = Path(recipe).read_text() if recipe is not None else json.dumps(meta["recipe"], indent=2)
    summary = _training_summary(run_dir)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model = lab.load_pretrained(final, dtype=torch.bfloat16)
        lab.save_pretrained(model, tmp, tokenizer_dir=data.DATA_DIR)
        losses = measure(tmp)  # on the shipped bf16 weights, not the fp32 ones they were rounded from
        parameters = sum(p.numel() for p in model.parameters())
        (tmp / "README.md").write_text(model_card(name, model.config, parameters, recipe_text, summary, losses))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    description = (f"pretraining of the shipped source {name}: M({model.config.n_layers}, {model.config.dim}) "
                   f"on the big corpus, {summary['tokens'] / 1e6:.1f}M tokens")
    export_run(run_dir, SOURCE_RUNS_DIR / name, description, shipped_validation_loss=losses)
    return {"losses": losses, "summary": summary}


def list_sources(root: Path = SOURCES_DIR) -> list[Path]:
    return sorted(p for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []
