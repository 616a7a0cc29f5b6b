"""`train.trainable: new-blocks` (LLaMA-Pro, Wu et al. 2024, arXiv 2401.02415): only the blocks depth growth
inserted train; every other parameter is bit-identical after training, and the optimizer holds no state for it."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import lab
from lab.checkpoint import read_config
from lab.cli import main
from lab.derive import grow_checkpoint, grow_model
from lab.errors import CheckpointError
from lab.growth import plan_growth
from lab.train import load_recipe, train
from lab.train import state as ckpt
from lab.train.setup import make_optimizer
from lab.train.trainable import freeze_all_but
from train_fixtures import TINY, records, tiny_recipe

NEW = [1, 3]  # 2 -> 4 layers, an identity block after each group's last layer: 0, 0', 1, 1' (see `grown`)
STEPS = 6


def is_new(name: str) -> bool:
    return any(name.startswith(f"layers.{layer}.") for layer in NEW)


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    """A tiny 2-layer checkpoint grown to 4 layers with LLaMA-Pro's identity blocks (placement last)."""
    root = tmp_path_factory.mktemp("grown")
    torch.manual_seed(3)
    lab.save_pretrained(lab.DecoderLM(lab.ModelConfig(**TINY["model"])), root / "source")
    source, _ = read_config(root / "source")
    plan = plan_growth(source, n_layers=4, depth="identity", placement="last")
    return grow_checkpoint(root / "source", root / "grown", plan)


def new_blocks_recipe(grown, **train_section) -> dict:
    recipe = tiny_recipe(train={"max_steps": STEPS, "eval_every": 0, "save_every": 3, "sample_tokens": 0,
                                "trainable": "new-blocks", **train_section})
    del recipe["model"]
    recipe["init_from"] = str(grown)
    return recipe


@pytest.fixture(scope="module")
def trained(grown, tmp_path_factory):
    """The grown model trained STEPS steps with `new-blocks` (the uninterrupted run of the resume test too)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train(new_blocks_recipe(grown), out, progress=False)
    return out


def test_growth_records_the_inserted_layers(grown, tmp_path):
    assert json.loads((grown / "config.json").read_text())["inserted_layers"] == NEW
    cfg, _ = read_config(grown)
    assert cfg.extra["inserted_layers"] == NEW
    # Another growth replaces the record: 4 -> 6 layers stacked appends copies of layers 0 and 1.
    stacked = grow_checkpoint(grown, tmp_path / "stacked", plan_growth(cfg, n_layers=6, depth="stack"))
    assert read_config(stacked)[0].extra["inserted_layers"] == [4, 5]
    # A growth that adds no layer leaves none recorded (the old indices mean nothing after it).
    wider = grow_checkpoint(grown, tmp_path / "wider", plan_growth(cfg, dim=64, n_heads=8))
    assert "inserted_layers" not in json.loads((wider / "config.json").read_text())
    # The in-memory growth records the same layers.
    source = lab.load_pretrained(grown.parent / "source")
    plan = plan_growth(source.config, n_layers=4, depth="identity", placement="last")
    assert grow_model(source, plan).config.extra["inserted_layers"] == NEW


def test_a_bad_record_names_the_file_and_key(grown, tmp_path):
    config = json.loads((grown / "config.json").read_text())
    for bad in ([1, 4], [1, 1], "1"):
        (tmp_path / "config.json").write_text(json.dumps({**config, "inserted_layers": bad}))
        with pytest.raises(CheckpointError, match=r"config.json: inserted_layers must"):
            read_config(tmp_path)


def test_frozen_parameters_are_bit_identical_and_new_blocks_change(grown, trained):
    before = lab.load_pretrained(grown).state_dict()
    after = lab.load_pretrained(trained / "final").state_dict()
    assert before.keys() == after.keys() and any(map(is_new, before)) and not all(map(is_new, before))
    for name in before:
        if is_new(name):
            assert not torch.equal(after[name], before[name]), f"{name} did not train"
        else:
            assert torch.equal(after[name], before[name]), f"{name} is frozen but changed"
    # The trained checkpoint keeps the record: a later stage can train the same blocks again.
    assert read_config(trained / "final")[0].extra["inserted_layers"] == NEW


def test_meta_records_what_trains(grown, trained):
    meta = json.loads((trained / "meta.json").read_text())
    model = lab.load_pretrained(grown)
    expected = sum(p.numel() for name, p in model.named_parameters() if is_new(name))
    assert meta["trainable"] == "new-blocks" and meta["recipe"]["train"]["trainable"] == "new-blocks"
    assert meta["trained_layers"] == NEW and meta["trained_parameters"] == expected
    assert 0 < expected < meta["parameters"]


def test_the_optimizer_holds_state_for_the_new_blocks_only(grown, trained):
    model = lab.load_pretrained(grown)
    trained_count = freeze_all_but(model, tuple(NEW))
    optimizer = make_optimizer(model, load_recipe(new_blocks_recipe(grown)))
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for name, p in model.named_parameters() if is_new(name)}
    assert trained_count == sum(p.numel() for name, p in model.named_parameters() if is_new(name))
    # Frozen parameters get no gradient: clipping and grad_norm measure the new blocks only.
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    model(ids, labels=ids).loss.backward()
    assert all((p.grad is None) != is_new(name) for name, p in model.named_parameters())
    # The run's AdamW state (saved with each checkpoint, keyed by name): entries for exactly the new blocks.
    _, optim_state, _ = ckpt.load_state(ckpt.checkpoint_dir(trained, STEPS))
    assert set(optim_state["state"]) == {name for name, _ in model.named_parameters() if is_new(name)}


def test_resume_equals_a_straight_run(grown, trained, tmp_path):
    """3 steps, then --resume to 6, is the 6 steps straight: the same losses and weights, bit for bit."""
    recipe = new_blocks_recipe(grown)
    train(recipe, tmp_path / "split", max_steps=3, progress=False)
    resumed = train(recipe, tmp_path / "split", resume=True, progress=False)
    assert resumed["step"] == STEPS and [r["from_step"] for r in records(tmp_path / "split", "resume")] == [3]
    assert [r["loss"] for r in records(tmp_path / "split", "train")] == [r["loss"] for r in records(trained, "train")]
    straight = lab.load_pretrained(trained / "final").state_dict()
    for name, tensor in lab.load_pretrained(tmp_path / "split" / "final").state_dict().items():
        assert torch.equal(tensor, straight[name]), name


def test_the_default_trains_everything_and_keeps_old_digests():
    recipe = load_recipe(tiny_recipe())
    assert recipe.train.trainable == "all"
    assert recipe.digest() == load_recipe(tiny_recipe(train={"trainable": "all"})).digest()
    assert recipe.digest() != load_recipe(tiny_recipe(train={"trainable": "new-blocks"})).digest()


def refused(capsys, tmp_path, recipe: dict, *args) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--recipe", str(path), "--out", str(tmp_path / "run"), *map(str, args), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: recipe train.trainable: ") and "\n" not in err, err
    assert not (tmp_path / "run").exists()
    return err


def test_bad_values_name_the_key(capsys, tmp_path, grown):
    err = refused(capsys, tmp_path, tiny_recipe(train={"trainable": "new"}))
    assert "must be one of all, new-blocks, got 'new'" in err
    err = refused(capsys, tmp_path, tiny_recipe(train={"trainable": "new-blocks"}))
    assert "a run from scratch has none" in err
    # A checkpoint that no depth growth made records no new blocks.
    err = refused(capsys, tmp_path, tiny_recipe(train={"trainable": "new-blocks"}), "--init", grown.parent / "source")
    assert "records no blocks inserted by depth growth" in err


@pytest.mark.slow
def test_two_processes_freeze_the_same_parameters(grown, trained, tmp_path):
    """Under FSDP2 (2 gloo processes) the frozen parameters stay bit-identical and the run matches one process."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(new_blocks_recipe(grown)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "lab", "train", "--recipe", str(path), "--out", str(tmp_path / "two"), "--quiet"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    before = lab.load_pretrained(grown).state_dict()
    after = lab.load_pretrained(tmp_path / "two" / "final").state_dict()
    one = lab.load_pretrained(trained / "final").state_dict()
    for name in before:
        if is_new(name):
            # Near the identity start the gradients are tiny and Adam's normalisation magnifies the rounding of
            # the gradient reduction: 1e-4 is still under 1% of what each new weight moved in these steps.
            torch.testing.assert_close(after[name], one[name], rtol=0, atol=1e-4, msg=name)
        else:
            assert torch.equal(after[name], before[name]), f"{name} is frozen but changed"
    losses = [[r["loss"] for r in records(run, "train")] for run in (tmp_path / "two", trained)]
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-5, atol=1e-5)
