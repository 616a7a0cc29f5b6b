"""Recipes: every shipped recipe validates; a bad key or value is one line that names it."""

from pathlib import Path

import pytest
import yaml

from lab.cli import main
from lab.errors import LabError
from lab.train import load_recipe
from lab.train.recipe import Recipe
from train_fixtures import tiny_recipe

ALL_RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
# Pipeline recipes (a top-level `pipeline:` name and `stages:`) are lab.pipeline's, tested in test_pipeline.py.
RECIPES = [p for p in ALL_RECIPES if "pipeline" not in yaml.safe_load(p.read_text(encoding="utf-8"))]


def test_the_shipped_recipes_are_there():
    names = {p.stem for p in RECIPES}
    assert {"tiny", "tiny-moe", "aquila-1.8b", "aquila-7b", "aquila-16b", "aquila-8x1.8b", "aquila-8x16b"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.run == path.stem
    # A recipe that starts from a checkpoint (the upcycled MoE of gpu-8x1b) gets its model from there.
    assert (recipe.model is None) == (recipe.init_from is not None)
    if recipe.model is not None:
        assert recipe.data.seq_len <= recipe.model.max_seq_len
    # Round trip: the dict form gives the same recipe (and digest).
    assert load_recipe(recipe.to_dict()) == recipe
    assert load_recipe(recipe.to_dict()).digest() == recipe.digest()


def test_paper_recipes_follow_the_table():
    r = load_recipe(RECIPES[0].parent / "aquila-8x16b.yaml")
    m = r.model
    assert (m.n_layers, m.dim, m.ffn_dim, m.n_heads, m.n_kv_heads) == (40, 5120, 20480, 40, 8)
    assert (m.n_experts, m.top_k, m.qkv_bias, m.tie_embeddings) == (8, 2, True, False)
    assert (m.aux_loss_coef, m.z_loss_coef) == (0.001, 0.01)
    assert r.optim.lr == 1.5e-4
    assert r.data.seq_len * r.data.batch_size * r.data.grad_accum == pytest.approx(24e6, rel=0.01)


@pytest.mark.parametrize("change, message", [
    ({"optim": {"lr": -1}}, "recipe optim.lr: must be > 0, got -1"),
    ({"optim": {"lrr": 1}}, "recipe optim.lrr: unknown key"),
    ({"optim": {"schedule": "step"}}, "recipe optim.schedule: must be one of cosine, linear, constant"),
    ({"optim": {"betas": [0.9]}}, "recipe optim.betas: must be a list of 2 numbers"),
    ({"data": {"seq_len": 1.5}}, "recipe data.seq_len: must be an integer, got 1.5"),
    ({"data": {"seq_len": 128}}, "recipe data.seq_len: must be <= model.max_seq_len (64), got 128"),
    ({"train": {"precision": "fp16"}}, "recipe train.precision: must be one of fp32, bf16"),
    ({"train": "fast"}, "recipe train: must be a mapping"),
    ({"hardware": {"gpu": "TPU"}}, "recipe hardware.gpu: must be one of"),
    ({"model": {"n_kv_heads": 3}}, "recipe model: ModelConfig.n_kv_heads=3: must divide n_heads=4"),
    ({"model": {"dims": 32}}, "recipe model: ModelConfig: unknown field 'dims'"),
    ({"model": None}, "recipe model, init_from: give exactly one"),
    ({"init_from": "x"}, "recipe model, init_from: give exactly one"),
    ({"epochs": 3}, "recipe epochs: unknown key"),
    ({"seed": "zero"}, "recipe seed: must be an integer"),
])
def test_bad_recipes_name_the_key(change, message):
    recipe = tiny_recipe(**change)
    with pytest.raises(LabError) as e:
        load_recipe(recipe)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("run: x\nmodel: {dim: 32, n_heads: 4, ffn_dim: 64}\noptim: {lr: 3e-3, eps: 1e-8}\n")
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe) and recipe.optim.lr == 3e-3 and recipe.optim.eps == 1e-8


def test_replace_switches_to_a_checkpoint():
    recipe = load_recipe(tiny_recipe()).replace(init_from="some/dir", train={"max_steps": 3})
    assert recipe.model is None and recipe.init_from == "some/dir" and recipe.train.max_steps == 3
    assert recipe.train.eval_every == 5  # the rest of the section is kept


@pytest.mark.parametrize("text, message", [
    ("run: x\nmodel: {dim: 32\n", "not valid YAML"),
    ("- 1\n- 2\n", "recipe: must be a mapping"),
    ("run: x\nmodel: {dim: 32, n_heads: 4}\ntrain: {max_steps: 0}\n", "recipe train.max_steps: must be > 0, got 0"),
])
def test_bad_recipe_files_on_the_command_line(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["train", "--recipe", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_missing_recipe_file(tmp_path, capsys):
    assert main(["train", "--recipe", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "no such recipe file" in capsys.readouterr().err


def test_digest_follows_the_recipe_not_the_hardware():
    recipe = load_recipe(tiny_recipe())
    assert recipe.replace(hardware={"peak_tflops": 100.0}).digest() == recipe.digest()
    assert recipe.replace(optim={"lr": 0.02}).digest() != recipe.digest()


def test_a_pipeline_recipe_given_to_train_says_which_command_runs_it(tmp_path, capsys):
    pipeline = next(p for p in ALL_RECIPES if p not in RECIPES)
    assert main(["train", "--recipe", str(pipeline), "--out", str(tmp_path / "run")]) == 2
    assert "python -m lab pipeline" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
