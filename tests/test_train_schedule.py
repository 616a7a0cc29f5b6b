"""The learning-rate schedule: warm-up to the peak, then decay to the floor at the recipe's last step."""

import math

import pytest

from lab.train.recipe import OptimSpec
from lab.train.schedule import learning_rate


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_then_decay(schedule):
    optim = OptimSpec(lr=1.0, min_lr_ratio=0.1, warmup_steps=10, schedule=schedule)
    lrs = [learning_rate(s, optim, 100) for s in range(1, 121)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up, peak at step 10
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    tail = lrs[9:100]
    if schedule == "constant":
        assert all(lr == 1.0 for lr in lrs[9:])
        return
    assert all(a >= b for a, b in zip(tail, tail[1:]))
    assert lrs[99] == pytest.approx(0.1)  # the floor at the last step, and after it
    assert all(lr == pytest.approx(0.1) for lr in lrs[100:])
    middle = learning_rate(55, optim, 100)
    assert middle == pytest.approx(0.55)  # half-way: cosine and linear agree at the midpoint


def test_cosine_shape():
    optim = OptimSpec(lr=2.0, min_lr_ratio=0.0, warmup_steps=0, schedule="cosine")
    for step in (1, 25, 50, 75, 100):
        assert learning_rate(step, optim, 100) == pytest.approx(1.0 + math.cos(math.pi * step / 100))
