"""Sharded checkpoints under torchrun (torch.distributed.checkpoint, 2 gloo processes on CPU): each process
writes its own shards, a run resumes on another number of processes exactly, reading never unpickles, a
process killed mid-save leaves the previous checkpoint as the resume point, and final/ is streamed."""

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import lab
from lab.checkpoint import write_lab_checkpoint
from lab.train import train
from lab.train.recipe import load_recipe
from lab.train.setup import check_run_dir
from lab.train.sharded_checkpoint import SHARDS, load_model_shards
from lab.train.state import STATE_JSON, STATE_TENSORS, complete_checkpoints
from train_fixtures import records, tiny_recipe

RECIPE = tiny_recipe(train={"max_steps": 8, "eval_every": 0, "save_every": 2, "sample_tokens": 0})


def torchrun(*args, launcher=None, nproc=2):
    """`lab train ARGS` on `nproc` gloo processes (through `launcher`, a script, when given)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    program = [str(launcher)] if launcher is not None else ["-m", "lab"]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *program, "train", *map(str, args), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """8 uninterrupted steps on one process: (its run directory, its losses)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train(RECIPE, out, progress=False)
    return out, [r["loss"] for r in records(out, "train")]


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


def no_unpickling(monkeypatch):
    """Make every unpickling entry point raise: a resume that reads a checkpoint must not reach one."""
    def refuse(*args, **kwargs):
        if kwargs.get("weights_only") is True:
            return original_torch_load(*args, **kwargs)
        raise AssertionError("a checkpoint was unpickled")

    original_torch_load = torch.load
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # one process, no process group: on purpose
def test_the_unpickling_guard_catches_dcps_default_storage(tmp_path, monkeypatch):
    """The guard the resumes below run under does catch a pickled checkpoint: DCP's default `.metadata`."""
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.ones(2)}, storage_writer=dcp.FileSystemWriter(tmp_path / "pickled"))
    no_unpickling(monkeypatch)
    with pytest.raises(BaseException, match="unpickled"):  # DCP wraps errors in a BaseException
        dcp.load({"w": torch.zeros(2)}, storage_reader=dcp.FileSystemReader(tmp_path / "pickled"))


def assert_losses_equal(run_dir, reference, what):
    found = records(run_dir, "train")
    assert [r["step"] for r in found] == list(range(1, 9)), what
    losses = torch.tensor([r["loss"] for r in found], dtype=torch.float64)
    torch.testing.assert_close(losses, torch.tensor(reference, dtype=torch.float64), rtol=1e-5, atol=0, msg=what)
    return (losses / torch.tensor(reference, dtype=torch.float64) - 1).abs().max().item()


@pytest.mark.slow
def test_two_processes_then_one_and_one_then_two_equal_one_straight_run(straight, recipe_file, tmp_path, monkeypatch):
    reference_dir, reference = straight

    # 2 -> 1: two processes write step 4 as shards, one process resumes from them to step 8.
    out = tmp_path / "two-then-one"
    first = torchrun("--recipe", recipe_file, "--out", out, "--max-steps", 4)
    assert first.returncode == 0, first.stderr[-3000:]
    step4 = dict(complete_checkpoints(out))[4]
    shard_files = sorted(p.name for p in (step4 / SHARDS).iterdir())
    assert shard_files == ["shard-00001-model-00001-of-00001.safetensors",
                           "shard-00002-model-00001-of-00001.safetensors"]  # one per process: nothing gathered
    assert not (step4 / "model.safetensors").exists() and not list(step4.rglob(".metadata"))
    assert {STATE_JSON, STATE_TENSORS, "config.json", "tokenizer.json"} <= {p.name for p in step4.iterdir()}

    # A checkpoint missing one process's shard file is passed over for the one before it.
    damaged = Path(shutil.copytree(out, tmp_path / "damaged"))
    (damaged / "checkpoints" / step4.name / SHARDS / shard_files[1]).unlink()
    warnings = []
    assert check_run_dir(damaged, load_recipe(RECIPE), True, report=warnings.append).name == "step-000002"
    assert len(warnings) == 1 and "a shard file is missing" in warnings[0]

    with monkeypatch.context() as patch:
        no_unpickling(patch)
        train(RECIPE, out, resume=True, progress=False)
    assert records(out, "resume")[-1]["from_step"] == 4
    worst = assert_losses_equal(out, reference, "2 -> 1")
    # Each checkpoint is recorded once complete (under torchrun its shards are written in the background).
    assert [r["step"] for r in records(out, "checkpoint")] == [2, 4, 6, 8]

    # 1 -> 2: one process writes step 4 whole, two processes resume from it (and write shards from then on).
    out = tmp_path / "one-then-two"
    train(RECIPE, out, max_steps=4, progress=False)
    second = torchrun("--recipe", recipe_file, "--out", out, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    worst = max(worst, assert_losses_equal(out, reference, "1 -> 2"))
    assert (dict(complete_checkpoints(out))[8] / SHARDS).is_dir()
    print(f"largest relative loss difference: {worst:.2e}")

    # final/ streamed from the sharded model, one gathered tensor at a time, holds the same files as the
    # single-process final/, and equals, bit for bit, today's writer fed with the same weights read whole.
    streamed, single = out / "final", reference_dir / "final"
    assert sorted(p.name for p in streamed.iterdir()) == sorted(p.name for p in single.iterdir())
    with torch.device("meta"):
        model = lab.DecoderLM(lab.load_pretrained(streamed).config)
    load_model_shards(model, dict(complete_checkpoints(out))[8], torch.device("cpu"))
    state = model.state_dict()
    whole = write_lab_checkpoint(tmp_path / "whole", model.config, lambda n, e: state[n] if e is None else state[n][e],
                                 expert_bias=True)
    assert (streamed / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    for (name, a), (_, b) in zip(lab.load_pretrained(single).state_dict().items(),
                                 lab.load_pretrained(streamed).state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


LAUNCHER = """
    import os
    import sys

    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    from lab.cli import main

    # The job is killed in the middle of saving step 4: each process dies (as under SIGKILL) right after
    # writing its shards, before rank 0 writes the state files and renames the checkpoint into place.
    write_data = HuggingFaceStorageWriter.write_data

    def write_then_die(self, plan, planner):
        written = write_data(self, plan, planner)
        if ".step-000004.partial-" in str(self.path):
            written.wait()
            os._exit(9)
        return written

    HuggingFaceStorageWriter.write_data = write_then_die
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_process_killed_mid_save_leaves_the_previous_checkpoint(straight, recipe_file, tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(textwrap.dedent(LAUNCHER))
    out = tmp_path / "run"
    crashed = torchrun("--recipe", recipe_file, "--out", out, "--max-steps", 6, launcher=launcher)
    assert crashed.returncode != 0
    leftovers = [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".step-000004.partial-")]
    assert len(leftovers) == 1 and len(list(leftovers[0].rglob("shard-*.safetensors"))) == 2  # both had written
    assert [step for step, _ in complete_checkpoints(out)] == [2]

    train(RECIPE, out, resume=True, progress=False)
    assert records(out, "resume")[-1]["from_step"] == 2
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert_losses_equal(out, straight[1], "resumed after the crash")
