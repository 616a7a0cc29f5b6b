"""FSDP2 under torchrun (2 gloo processes on CPU) trains exactly as one process does, and resumes."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

import lab
from lab.distributed import DistInfo, all_reduce, setup, shard
from lab.train import train
from train_fixtures import records, tiny_recipe


def torchrun(*args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "lab", "train", *map(str, args), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)


def test_single_process_helpers_are_no_ops():
    info = setup("cpu")
    assert info == DistInfo() and info.is_main and not info.sharded
    model = torch.nn.Linear(2, 2)
    assert shard(model, info) is model
    t = torch.tensor([1.0, 2.0])
    assert all_reduce(t, info) is t


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    recipe = tiny_recipe(train={"max_steps": 6, "eval_every": 3, "save_every": 3, "sample_tokens": 3})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    single = train(recipe, tmp_path / "one", progress=False)

    # Three steps, stop, then resume to six: each process writes its own shards of the model and the
    # optimizer state (torch.distributed.checkpoint) and reads back the pieces it owns.
    first = torchrun("--recipe", path, "--out", tmp_path / "two", "--max-steps", 3)
    assert first.returncode == 0, first.stderr[-3000:]
    second = torchrun("--recipe", path, "--out", tmp_path / "two", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "model: " in second.stdout and second.stdout.count("model: ") == 1  # one process reports

    one, two = records(tmp_path / "one", "train"), records(tmp_path / "two", "train")
    assert [r["step"] for r in two] == list(range(1, 7))
    for key in ("loss", "grad_norm"):
        torch.testing.assert_close(torch.tensor([r[key] for r in two]), torch.tensor([r[key] for r in one]),
                                   rtol=1e-5, atol=1e-5, msg=key)
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one]
    val_one = [r["val_loss"] for r in records(tmp_path / "one", "eval")]
    val_two = [r["val_loss"] for r in records(tmp_path / "two", "eval")]
    for a, b in zip(val_one, val_two, strict=True):
        assert b == pytest.approx(a, abs=1e-5)
    assert len(records(tmp_path / "two", "sample")) == 3
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta["environment"]["world_size"] == 2

    # The final checkpoint is a whole Hugging Face directory, equal to the single process's.
    ours, theirs = lab.load_pretrained(tmp_path / "one" / "final"), lab.load_pretrained(tmp_path / "two" / "final")
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert single["step"] == 6


@pytest.mark.slow
def test_moe_under_two_processes(tmp_path):
    """Expert counts are summed over the processes. The auxiliary losses are each process's own (as in
    Megatron), so an MoE run on 2 processes is close to, not equal to, the run on one."""
    recipe = tiny_recipe(model={"n_experts": 4, "top_k": 2, "moe_ffn_dim": 32},
                         train={"max_steps": 2, "eval_every": 0, "sample_tokens": 0})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = torchrun("--recipe", path, "--out", tmp_path / "two")
    assert result.returncode == 0, result.stderr[-3000:]
    one = train(recipe, tmp_path / "one", max_steps=1, progress=False)
    first = records(tmp_path / "two", "train")[0]
    assert all(sum(layer) == 4 * 32 * 2 for layer in first["tokens_per_expert"])  # the global batch, top-2
    assert first["tokens_per_expert"] == records(tmp_path / "one", "train")[0]["tokens_per_expert"]
    assert first["lm_loss"] == pytest.approx(one["lm_loss"], abs=1e-5)  # the same first step's LM loss
    assert first["aux_loss"] >= 1.0 - 1e-4 and first["z_loss"] > 0
    assert lab.load_pretrained(tmp_path / "two" / "final").config.n_experts == 4


@pytest.mark.slow
def test_a_run_resumes_on_another_number_of_processes(tmp_path):
    """Two processes stop at step 3 and one process resumes to 6, and the other way round: both equal one
    uninterrupted process (a sharded checkpoint is resharded on load; a one-process one is sharded again)."""
    recipe = tiny_recipe(train={"max_steps": 6, "eval_every": 3, "save_every": 3, "sample_tokens": 0})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train(recipe, tmp_path / "one", progress=False)
    reference = [r["loss"] for r in records(tmp_path / "one", "train")]

    first = torchrun("--recipe", path, "--out", tmp_path / "two-then-one", "--max-steps", 3)
    assert first.returncode == 0, first.stderr[-3000:]
    train(recipe, tmp_path / "two-then-one", resume=True, progress=False)

    train(recipe, tmp_path / "one-then-two", max_steps=3, progress=False)
    second = torchrun("--recipe", path, "--out", tmp_path / "one-then-two", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]

    for run in ("two-then-one", "one-then-two"):
        losses = [r["loss"] for r in records(tmp_path / run, "train")]
        assert [r["step"] for r in records(tmp_path / run, "train")] == list(range(1, 7)), run
        torch.testing.assert_close(torch.tensor(losses), torch.tensor(reference), rtol=1e-5, atol=1e-6, msg=run)
