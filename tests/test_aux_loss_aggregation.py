"""How the MoE layers' auxiliary losses combine (`ModelConfig.router_loss_aggregation`): "sum" as
Megatron-Core and so AquilaMoE (arXiv 2408.06567), "mean" for every config written before the setting.
Covers the arithmetic, config.json both ways, the recipes of the paper, the user's mistakes, upcycling,
pipelines, digests of earlier runs, and the metric records."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from hf_models import tiny_hf_model

import lab
from lab import DecoderLM, ModelConfig
from lab.checkpoint import read_config
from lab.cli import main
from lab.config import without_later_defaults
from lab.errors import CheckpointError, LabError
from lab.pipeline.recipe import load_pipeline
from lab.train.recipe import load_recipe
from lab.upcycle import UpcyclePlan, upcycle_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# MoE layers 0, 2 and 3 of 4: n counts MoE layers, not layers.
SMALL_MOE = dict(vocab_size=64, dim=16, n_layers=4, n_heads=2, ffn_dim=24, n_experts=4, top_k=2,
                 moe_layers=(0, 2, 3), aux_loss_coef=0.001, z_loss_coef=0.01)


def twin_outputs():
    """The same weights and tokens under "mean" and under "sum"."""
    torch.manual_seed(0)
    mean_model = DecoderLM(ModelConfig(**SMALL_MOE))
    sum_model = DecoderLM(ModelConfig(**SMALL_MOE, router_loss_aggregation="sum"))
    sum_model.load_state_dict(mean_model.state_dict())
    ids = torch.randint(0, 64, (2, 12))
    return mean_model(ids, labels=ids), sum_model(ids, labels=ids)


# ---------------------------------------------------------------------------- the arithmetic
def test_sum_is_n_moe_layers_times_mean_for_both_losses():
    mean, total = twin_outputs()
    n = 3
    torch.testing.assert_close(total.aux_loss, n * mean.aux_loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(total.z_loss, n * mean.z_loss, rtol=1e-6, atol=0)
    # Everything else is the aggregation's business only: same logits, lm loss, loads, entropy.
    assert torch.equal(total.logits, mean.logits) and torch.equal(total.lm_loss, mean.lm_loss)
    assert torch.equal(total.tokens_per_expert, mean.tokens_per_expert)
    assert torch.equal(total.router_entropy, mean.router_entropy)
    # ... and the training loss weighs the summed losses with the same coefficients.
    torch.testing.assert_close(total.loss, total.lm_loss + 0.001 * total.aux_loss + 0.01 * total.z_loss)


def test_sum_is_the_plain_sum_of_the_layers_losses():
    from lab.moe import aggregate_layer_losses

    per_layer = [torch.tensor(1.25), torch.tensor(0.5), torch.tensor(2.0)]
    assert aggregate_layer_losses(per_layer, "sum").item() == 3.75
    assert aggregate_layer_losses(per_layer, "mean").item() == 1.25
    assert 3 * aggregate_layer_losses(per_layer, "mean").item() == aggregate_layer_losses(per_layer, "sum").item()


def test_default_is_mean():
    assert ModelConfig(**SMALL_MOE).router_loss_aggregation == "mean"
    assert UpcyclePlan().router_loss_aggregation == "mean"


# ---------------------------------------------------------------------------- config.json
def test_round_trip_through_save_and_load_pretrained(tmp_path):
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(**SMALL_MOE, router_loss_aggregation="sum"))
    lab.save_pretrained(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["router_loss_aggregation"] == "sum"
    assert lab.load_pretrained(tmp_path / "ckpt").config.router_loss_aggregation == "sum"
    # transformers opens it and keeps the lab's key as a plain attribute.
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    assert hf.config.router_loss_aggregation == "sum"


def test_a_config_json_without_the_key_means_mean(tmp_path):
    """Checkpoints written before the setting existed (and transformers' own) averaged."""
    tiny_hf_model("mixtral").save_pretrained(tmp_path / "hf")
    assert "router_loss_aggregation" not in json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg, _ = read_config(tmp_path / "hf")
    assert cfg.router_loss_aggregation == "mean"


def test_a_dense_config_json_does_not_carry_it(tmp_path):
    model = DecoderLM(ModelConfig(vocab_size=64, dim=16, n_layers=2, n_heads=2, ffn_dim=24))
    lab.save_pretrained(model, tmp_path / "dense")
    assert "router_loss_aggregation" not in json.loads((tmp_path / "dense" / "config.json").read_text())


# ---------------------------------------------------------------------------- the user's mistakes
def test_bad_value_in_model_config_names_the_key():
    with pytest.raises(ValueError, match="router_loss_aggregation='avg': must be one of"):
        ModelConfig(**SMALL_MOE, router_loss_aggregation="avg")


def test_bad_value_in_a_recipe_is_a_lab_error_naming_the_key():
    values = yaml.safe_load((RECIPES / "tiny-moe.yaml").read_text())
    values["model"]["router_loss_aggregation"] = "avg"
    with pytest.raises(LabError, match="recipe model: .*router_loss_aggregation='avg'"):
        load_recipe(values)


def test_bad_value_in_config_json_is_a_checkpoint_error_naming_the_key(tmp_path):
    torch.manual_seed(0)
    lab.save_pretrained(DecoderLM(ModelConfig(**SMALL_MOE)), tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "router_loss_aggregation": "avg"}))
    with pytest.raises(CheckpointError, match="config.json: .*router_loss_aggregation='avg'"):
        read_config(tmp_path / "ckpt")


def test_bad_value_in_an_upcycle_plan_is_a_lab_error_naming_the_option():
    dense = ModelConfig(vocab_size=64, dim=16, n_layers=2, n_heads=2, ffn_dim=24)
    with pytest.raises(LabError, match="--router-loss-aggregation 'avg': must be one of mean, sum"):
        upcycle_config(dense, UpcyclePlan(router_loss_aggregation="avg"))


def test_bad_value_in_a_pipeline_upcycle_block_names_the_key():
    values = yaml.safe_load((RECIPES / "efficientscale-tiny.yaml").read_text())
    values["stages"][-1]["upcycle"]["router_loss_aggregation"] = "avg"
    with pytest.raises(LabError, match=r"pipeline stages\[2\]\.upcycle\.router_loss_aggregation: must be one of"):
        load_pipeline(values)


# ---------------------------------------------------------------------------- upcycling and pipelines
@pytest.fixture(scope="module")
def dense_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "qwen2"
    tiny_hf_model("qwen2", seed=4).save_pretrained(path)
    return path


def test_upcycle_command_writes_the_choice(dense_checkpoint, tmp_path, capsys):
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense_checkpoint), str(out), "--router-loss-aggregation", "sum"]) == 0
    assert "sum over MoE layers (written to config.json)" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["router_loss_aggregation"] == "sum"
    assert lab.load_pretrained(out).config.router_loss_aggregation == "sum"


def test_upcycle_command_refuses_an_unknown_aggregation(dense_checkpoint, tmp_path, capsys):
    assert main(["upcycle", str(dense_checkpoint), str(tmp_path / "moe"), "--router-loss-aggregation", "avg"]) == 2
    assert "--router-loss-aggregation" in capsys.readouterr().err
    assert not (tmp_path / "moe").exists()


def test_pipeline_upcycle_block_reaches_the_stage_and_the_baseline():
    values = yaml.safe_load((RECIPES / "efficientscale-tiny.yaml").read_text())
    mean = load_pipeline(values)
    values["stages"][-1]["upcycle"]["router_loss_aggregation"] = "sum"
    summed = load_pipeline(values)
    assert summed.stages[-1].plan.router_loss_aggregation == "sum"
    assert summed.stages[-1].config.router_loss_aggregation == "sum"
    assert summed.baseline.model.router_loss_aggregation == "sum"
    assert mean.stages[-1].config.router_loss_aggregation == "mean"
    assert summed.digest() != mean.digest()  # a different training objective: no resuming across it


# ---------------------------------------------------------------------------- the paper's recipes
@pytest.mark.parametrize("name", ["aquila-8x16b", "aquila-8x1.8b"])
def test_paper_training_recipes_sum(name):
    assert load_recipe(RECIPES / f"{name}.yaml").model.router_loss_aggregation == "sum"


@pytest.mark.parametrize("name", ["aquilamoe", "efficientscale-mid"])
def test_paper_pipeline_recipes_sum(name):
    pipeline = load_pipeline(RECIPES / f"{name}.yaml")
    assert pipeline.stages[-1].config.router_loss_aggregation == "sum"
    assert pipeline.baseline.model.router_loss_aggregation == "sum"


def test_gpu_8x1b_upcycle_command_sums(dense_checkpoint, tmp_path):
    """gpu-8x1b trains from the upcycled checkpoint, whose config.json its header's command writes."""
    header = (RECIPES / "gpu-8x1b.yaml").read_text()
    line = next(l for l in header.splitlines() if "python -m lab upcycle" in l)
    words = shlex.split(line.lstrip("# "))
    options = words[words.index("upcycle") + 3:]  # after SRC and OUT
    out = tmp_path / "gpu-8x1b-init"
    assert main(["upcycle", str(dense_checkpoint), str(out), *options]) == 0
    assert read_config(out)[0].router_loss_aggregation == "sum"


def test_every_moe_recipe_naming_the_paper_sums_but_the_shipped_toy():
    """efficientscale-tiny keeps "mean": its reference runs in data/runs were made so."""
    for path in sorted(RECIPES.glob("*.yaml")):
        if "2408.06567" not in path.read_text() or path.stem == "efficientscale-tiny":
            continue
        values = yaml.safe_load(path.read_text())
        if "stages" in values:
            cfg = load_pipeline(path).stages[-1].config
        elif values.get("model"):
            cfg = load_recipe(path).model
        else:
            continue
        if cfg.is_moe:
            assert cfg.router_loss_aggregation == "sum", path.name


# ---------------------------------------------------------------------------- digests of earlier runs
def test_mean_leaves_a_recipe_digest_as_it_was_before_the_setting():
    """Runs begun before the field existed recorded the digest of a model dict without it."""
    recipe = load_recipe(RECIPES / "tiny-moe.yaml")
    earlier = {k: v for k, v in recipe.to_dict().items() if k != "hardware"}
    del earlier["model"]["router_loss_aggregation"]
    text = json.dumps(without_later_defaults(earlier), sort_keys=True)  # (other later fields aside)
    assert recipe.digest() == hashlib.sha256(text.encode()).hexdigest()[:16]
    summed = recipe.replace(model={**recipe.to_dict()["model"], "router_loss_aggregation": "sum"})
    assert summed.digest() != recipe.digest()


def test_without_later_defaults_drops_only_the_original_value_at_any_depth():
    values = {"model": {"dim": 8, "router_loss_aggregation": "mean"},
              "plans": [{"router_loss_aggregation": "sum"}, None]}
    assert without_later_defaults(values) == {"model": {"dim": 8}, "plans": [{"router_loss_aggregation": "sum"}, None]}


# ---------------------------------------------------------------------------- metric records
def test_train_records_and_meta_say_which_aggregation(tmp_path):
    from lab.train import train
    from train_fixtures import records, tiny_recipe

    recipe = tiny_recipe(model={"n_experts": 4, "top_k": 2, "router_loss_aggregation": "sum"},
                         train={"max_steps": 2, "eval_every": 0, "save_every": 0, "sample_tokens": 0})
    train(recipe, tmp_path / "run", progress=False)
    train_records = records(tmp_path / "run", "train")
    assert train_records and all(r["router_loss_aggregation"] == "sum" for r in train_records)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["model"]["router_loss_aggregation"] == "sum"


def test_teaching_loop_records_say_which_aggregation():
    from lab.teach.loop import train_steps

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=4096, dim=16, n_layers=2, n_heads=2, ffn_dim=24, n_experts=4, top_k=2,
                      max_seq_len=64, router_loss_aggregation="sum")
    records = train_steps(DecoderLM(cfg), 1, seq_len=16, batch_size=2)
    assert [r["router_loss_aggregation"] for r in records if r["event"] == "train"] == ["sum"]
