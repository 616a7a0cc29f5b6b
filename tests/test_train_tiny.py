"""recipes/tiny.yaml learns: its validation loss falls from about ln(vocab) to clearly below."""

import math
from pathlib import Path

import pytest

from lab.train import load_recipe, train
from train_fixtures import records

TINY = Path(__file__).resolve().parent.parent / "recipes" / "tiny.yaml"


@pytest.mark.slow
def test_tiny_recipe_loss_falls(tmp_path):
    recipe = load_recipe(TINY).replace(train={"sample_tokens": 0})
    summary = train(recipe, tmp_path / "tiny", max_steps=60, progress=False)
    evals = records(tmp_path / "tiny", "eval")
    assert evals[0]["step"] == 0 and evals[0]["val_loss_mean"] == pytest.approx(math.log(4096), abs=0.1)
    assert evals[-1]["step"] == 60 and evals[-1]["val_loss_mean"] < 6.5
    assert summary["loss"] < 7.0
