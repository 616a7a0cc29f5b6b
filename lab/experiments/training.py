"""The training recipes the experiments build in code, all from one settings object (lab.train.recipe's schema).

Every run of an experiment trains on the same data with the same batch and is evaluated on the same
validation windows (`seq_len`, `eval_sequences`), so that any two losses of the experiment compare. The
recipe's `seed` is the experiment's seed: it decides the data order (lab.data.TrainBatches) and the
initialisation of a model trained from scratch.
"""

from __future__ import annotations

from lab.config import ModelConfig
from lab.train import Recipe, load_recipe


def data_section(settings) -> dict:
    """The recipes' `data`: the shipped corpus, or the memory-mapped tokens when `settings.tokens` is set
    (the key exists only then, so that recipes stay valid where the training data has no such key)."""
    data = {"seq_len": settings.seq_len, "batch_size": settings.batch_size}
    if settings.corpus is not None:
        data["corpus"] = str(settings.path("corpus"))
    if settings.tokens is not None:
        data["tokens"] = str(settings.path("tokens"))
    return data


def eval_every(settings, steps: int) -> int:
    return max(1, steps // settings.evaluations)


def train_section(settings, steps: int, *, log_every: int | None = None, every: int | None = None) -> dict:
    """The recipes' `train`: `steps` steps, `settings.evaluations` evaluations (or one every `every` steps),
    a checkpoint every `settings.checkpoint_every` steps (the last one kept: resume needs no more), no
    samples (they cost time and no claim reads them)."""
    return {"max_steps": steps, "eval_every": every or eval_every(settings, steps),
            "eval_sequences": settings.eval_sequences, "save_every": min(steps, settings.checkpoint_every),
            "keep_checkpoints": 1, "log_every": log_every or max(1, steps // 100), "sample_tokens": 0}


def optim_section(lr: float, warmup_steps: int, steps: int) -> dict:
    # A short run keeps a fifth of its steps at most for warm-up, so that it still reaches its peak lr.
    return {"lr": lr, "warmup_steps": min(warmup_steps, steps // 5), "schedule": "cosine", "min_lr_ratio": 0.1}


def training_recipe(settings, *, run: str, stage: str, seed: int, steps: int, lr: float, warmup_steps: int,
                    init_from=None, model: ModelConfig | None = None, log_every: int | None = None,
                    domains: tuple[str, ...] | None = None, trainable: str = "all") -> Recipe:
    """A validated recipe that trains `steps` steps from the checkpoint `init_from`, or `model` from scratch,
    on the training data's `domains` (None: all) and updating `trainable` (lab.train.recipe's
    `train.trainable`). Both keys are written only when they differ from the default, so that the recipes
    of the experiments that never set them stay what they were."""
    values = {"run": run, "stage": stage, "seed": seed, "data": data_section(settings),
              "optim": optim_section(lr, warmup_steps, steps),
              "train": train_section(settings, steps, log_every=log_every)}
    if domains is not None:
        values["data"]["domains"] = list(domains)
    if trainable != "all":
        values["train"]["trainable"] = trainable
    if init_from is not None:
        values["init_from"] = str(init_from)
    else:
        values["model"] = model.replace(dtype="float32").to_dict()
    return load_recipe(values)
