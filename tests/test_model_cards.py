"""Every checkpoint the lab writes carries a model card that huggingface_hub reads: grow, upcycle, train's
final/ and save_pretrained, with `base_model` where the model was made from another."""

from __future__ import annotations

import pytest
from hf_models import tiny_hf_model
from huggingface_hub import ModelCard
from train_fixtures import tiny_recipe

import lab
from lab.cli import main
from lab.train import load_recipe, train


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "dense"
    tiny_hf_model("qwen2", seed=2).save_pretrained(path)
    return path


def card(directory) -> ModelCard:
    return ModelCard.load(directory / "README.md")


def test_grow_writes_the_plan_the_command_and_its_base_model(source, tmp_path):
    out = tmp_path / "grown"
    assert main(["grow", str(source), str(out), "--method", "aki-pro", "--hidden-size", "128", "--num-heads", "8",
                 "--num-layers", "3"]) == 0
    grown = card(out)
    assert grown.data.base_model == str(source) and grown.data.library_name == "transformers"
    assert {"efficientscale-lab", "qwen2", "model-growth", "aki-pro"} <= set(grown.data.tags)
    assert '"method": "aki-pro"' in grown.text and '"depth": "interpolate"' in grown.text
    assert f"python -m lab grow {source} {out} --method aki-pro" in grown.text


def test_upcycle_writes_the_plan_and_its_base_model(source, tmp_path):
    out = tmp_path / "moe"
    assert main(["upcycle", str(source), str(out), "--num-experts", "4", "--top-k", "2"]) == 0
    moe = card(out)
    assert moe.data.base_model == str(source)
    assert {"moe", "sparse-upcycling"} <= set(moe.data.tags)
    assert '"n_experts": 4' in moe.text and "4 experts, top-2" in moe.text


def test_training_writes_a_card_into_final_with_its_recipe(tmp_path):
    scratch = train(load_recipe(tiny_recipe(train={"max_steps": 2, "eval_every": 2, "save_every": 2})),
                    tmp_path / "scratch", progress=False)
    fresh = card(tmp_path / "scratch" / "final")
    assert fresh.data.base_model is None and "from scratch" in fresh.text and "- steps: `2`" in fresh.text
    assert scratch["step"] == 2
    source = tmp_path / "scratch" / "final"
    values = tiny_recipe(train={"max_steps": 2, "eval_every": 2, "save_every": 2}, init_from=str(source))
    del values["model"]
    train(load_recipe(values), tmp_path / "continued", progress=False)
    continued = card(tmp_path / "continued" / "final")
    assert continued.data.base_model == str(source) and "validation loss at the last evaluation" in continued.text
    # The checkpoints a resume reads carry no card: it is the published model's.
    assert not list((tmp_path / "continued" / "checkpoints").rglob("README.md"))


def test_save_pretrained_writes_a_card_without_a_base_model(source, tmp_path):
    lab.save_pretrained(lab.load_pretrained(source), tmp_path / "copy")
    saved = card(tmp_path / "copy")
    assert saved.data.base_model is None and "efficientscale-lab" in saved.data.tags
