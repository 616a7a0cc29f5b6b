"""A run of no steps: a checkpoint evaluated exactly as the training loop evaluates before its first step.

Some measurements need a loss without training (the source's own loss, a grown model kept as grown).
They are written as a run directory like any other (meta.json, metrics.jsonl with one `eval` record at
step 0) so that lab.runs, the dashboard and the claims read them the same way. The windows, the model's
dtype and the evaluation are the training loop's own (`lab.train.setup.load_data`,
`lab.train.evaluate.validation_eval`), so this loss equals the step-0 loss of a training run from the
same checkpoint with the same data settings.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import torch

from lab.train import Recipe


def write_evaluation_run(recipe: Recipe, run_dir: Path) -> dict:
    """Evaluate `recipe.init_from` and write the run to `run_dir` (atomically); returns a summary."""
    from lab.checkpoint import hf_model_type, load_pretrained
    from lab.distributed import DistInfo, current_device
    from lab.flops import active_parameters, flops_per_token
    from lab.train.evaluate import validation_eval
    from lab.train.metrics import MetricsWriter, environment, write_meta
    from lab.train.setup import base_config, load_data

    info = DistInfo(device=current_device(recipe.hardware.device))
    cfg = base_config(recipe)
    data = load_data(recipe, cfg, info)
    # fp32, as the training loop loads a checkpoint it starts from.
    model = load_pretrained(recipe.init_from, dtype=torch.float32, device=info.device)
    losses, loads = validation_eval(model, data.validation, info.device)
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an evaluation is cheap to redo: never resumed
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_dir.with_name(f".{run_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    write_meta(tmp, {"run": recipe.run, "stage": recipe.stage, "kind": "evaluation", "recipe": recipe.to_dict(),
                     "recipe_digest": recipe.digest(), "model": cfg.to_dict(), "model_type": hf_model_type(cfg),
                     "parameters": model.num_parameters(), "active_parameters": active_parameters(cfg),
                     "flops_per_token": flops_per_token(cfg, recipe.data.seq_len),
                     "environment": environment(info.device, 1), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    extra = {} if loads is None else {"tokens_per_expert_by_domain": loads}
    MetricsWriter(tmp, recipe.run, recipe.stage).write(
        "eval", 0, 0, 0.0, val_loss=losses, val_loss_mean=sum(losses.values()) / len(losses), **extra)
    tmp.rename(run_dir)
    return {"run": recipe.run, "stage": recipe.stage, "step": 0, "val_loss": losses, "out_dir": str(run_dir)}
