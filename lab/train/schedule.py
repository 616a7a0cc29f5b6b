"""The learning-rate schedule: linear warm-up to the peak, then cosine, linear or constant decay.

A pure function of the step, so resuming needs only the step number (no scheduler state).
"""

from __future__ import annotations

import math

from lab.train.recipe import OptimSpec


def learning_rate(step: int, optim: OptimSpec, total_steps: int) -> float:
    """The lr of optimizer step `step` (1-based) of `total_steps`.

    Steps 1..warmup_steps rise linearly to `lr` (step warmup_steps is at the peak); then the lr decays
    to `min_lr_ratio * lr` at `total_steps` (cosine or linear), and stays there for any later step.
    """
    peak, floor = optim.lr, optim.lr * optim.min_lr_ratio
    if step <= optim.warmup_steps:
        return peak * step / optim.warmup_steps
    if optim.schedule == "constant":
        return peak
    decay_steps = max(total_steps - optim.warmup_steps, 1)
    progress = min((step - optim.warmup_steps) / decay_steps, 1.0)
    if optim.schedule == "linear":
        return peak - (peak - floor) * progress
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
