"""`python -m lab upcycle`: what it prints, what it writes, and one line for each user mistake."""

from __future__ import annotations

import json

import pytest
from hf_models import tiny_hf_model

from lab.cli import main


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "qwen2"
    tiny_hf_model("qwen2", seed=4).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def moe_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "mixtral"
    tiny_hf_model("mixtral", seed=4).save_pretrained(path)
    return path


def test_upcycle_prints_the_choice_and_verifies(dense, tmp_path, capsys):
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense), str(out), "--num-experts", "8", "--top-k", "2", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "writes qwen2_moe: the source has q/k/v bias" in printed
    gap = float(printed.split("max |logit gap| ")[1].split(",")[0])
    assert gap < 1e-5
    config = json.loads((out / "config.json").read_text())
    assert (config["num_experts"], config["num_experts_per_tok"], config["norm_topk_prob"]) == (8, 2, True)
    assert (config["router_aux_loss_coef"], config["router_z_loss_coef"]) == (0.001, 0.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moe"]  # no temporary sibling left


def test_paper_router_variance_option(dense, tmp_path, capsys):
    from lab.checkpoint import CheckpointSource

    assert main(["upcycle", str(dense), str(tmp_path / "moe"), "--router-init-variance", "0.02", "--seed", "5"]) == 0
    assert "router ~ Normal(0, 0.1414), seed 5" in capsys.readouterr().out
    from lab.upcycle import UpcyclePlan, router_weight

    with CheckpointSource(tmp_path / "moe") as moe:
        expected = router_weight(UpcyclePlan(router_init_std=0.02 ** 0.5, seed=5), 1, 64)
        assert (moe.tensor("layers.1.mlp.router.weight") == expected).all()


@pytest.mark.parametrize("args, message", [
    (["--num-experts", "4", "--top-k", "5"], "--top-k 5 is larger than --num-experts 4"),
    (["--num-experts", "6", "--top-k", "4", "--granularity", "4"], "--num-experts 6 is not a multiple of --granularity 4"),
    (["--num-experts", "10", "--top-k", "5", "--granularity", "5"], "ffn_dim 96 is not divisible by --granularity 5"),
    (["--num-experts", "8", "--top-k", "3", "--granularity", "2"], "--top-k 3 is not a multiple of --granularity 2"),
    (["--router-init-std", "0"], "the router's init std must be positive"),
    (["--drop-ratio", "1.5"], "--drop-ratio: must be in [0, 1]"),
    (["--every", "3"], "--every 3: must be in [1, n_layers=2]"),
    (["MOE"], "the source is already a Mixture of Experts"),
    (["EXISTS"], "already exists"),
    (["MISSING"], "not a directory"),
])
def test_user_mistakes_give_one_line_and_write_nothing(dense, moe_source, tmp_path, capsys, args, message):
    src, out = dense, tmp_path / "out"
    if args[0] == "MOE":
        src, args = moe_source, args[1:]
    elif args[0] == "EXISTS":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        args = args[1:]
    elif args[0] == "MISSING":
        src, args = tmp_path / "nowhere", args[1:]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["upcycle", str(src), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing half-written


def test_force_replaces_an_existing_output(dense, tmp_path, capsys):
    out = tmp_path / "moe"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(["upcycle", str(dense), str(out), "--force"]) == 0
    assert (out / "config.json").is_file() and not (out / "old.txt").exists()
