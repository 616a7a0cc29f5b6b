"""The shipped pretrained sources (data/sources/): each opens in transformers with the lab's logits
(fp32, 1e-4) and its tokenizer with AutoTokenizer, and its model card's losses are what its weights give."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import lab
from lab import data
from lab.sources import SOURCE_RUNS_DIR, list_sources, shipped_validation_losses

SOURCES = list_sources()


def test_the_sources_are_shipped():
    from lab.sources import SOURCE_NAMES

    assert [p.name for p in SOURCES] == sorted(SOURCE_NAMES)  # committed: a missing one fails, never skips


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_source_opens_in_transformers_with_the_labs_logits(path):
    ours = lab.load_pretrained(path, dtype=torch.float32).eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    text = "def add(a, b):\n    return a + b\n床前明月光，疑是地上霜。\n37 + 85 = 122"
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    assert ids.tolist()[0] == data.load_tokenizer().encode(text, add_special_tokens=False).ids
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_source_losses_are_what_its_weights_give(path):
    recorded = json.loads((SOURCE_RUNS_DIR / path.name / "meta.json").read_text())["shipped_validation_loss"]
    model = lab.load_pretrained(path, dtype=torch.float32)
    measured = shipped_validation_losses(model)
    assert measured["mean"] == pytest.approx(recorded["full"]["mean"], abs=1e-4)
    assert f"**{recorded['full']['mean']:.4f}**" in (path / "README.md").read_text()
