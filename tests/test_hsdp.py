"""HSDP (`hardware.shard_group`, `--shard-group`): parameters sharded inside groups of consecutive processes and
replicated across the groups. Checked before a run starts; on 4 gloo processes in 2 groups of 2 each process
holds its group's shard and the step equals the unsharded one; a run trains as one process does and resumes
from its sharded checkpoint on another layout."""

import os
import subprocess
import sys

import pytest
import torch
import yaml

import lab
from lab.distributed import check_shard_group
from lab.errors import LabError, RecipeError
from lab.train import load_recipe, train
from mesh_layouts import run_layouts
from train_fixtures import records, tiny_recipe


def torchrun(nproc: int, *args) -> subprocess.CompletedProcess:
    """`python -m lab train ARGS` under `python -m torch.distributed.run` on `nproc` gloo processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "lab", "train", *map(str, args), "--quiet"], capture_output=True, text=True, env=env,
                          timeout=300)


def test_shard_group_is_checked_before_a_run_starts(tmp_path):
    check_shard_group(None, 2, 4)  # unset: FSDP over every process, nothing to check
    check_shard_group(2, 2, 4)
    check_shard_group(4, 2, 8)
    for size, ep, world, says in [(3, 1, 4, "3 does not divide the 4 processes"),
                                  (2, 1, 1, "2 does not divide the 1 processes .*torchrun"),
                                  (2, 4, 8, "2 is not a multiple of hardware.expert_parallel 4")]:
        with pytest.raises(RecipeError, match=says) as e:
            check_shard_group(size, ep, world)
        assert e.value.key == "hardware.shard_group"
    with pytest.raises(LabError, match="hardware.shard_group: must be > 0"):
        load_recipe(tiny_recipe(hardware={"shard_group": 0}))
    assert load_recipe(tiny_recipe()).hardware.shard_group is None  # the default: no HSDP
    # The hardware section is not part of the digest: a run resumes under another shard group.
    assert load_recipe(tiny_recipe(hardware={"shard_group": 2})).digest() == load_recipe(tiny_recipe()).digest()
    # From the command line: one error line, exit 2, nothing written.
    out = subprocess.run([sys.executable, "-m", "lab", "train", "--recipe", "tiny", "--out", tmp_path / "run",
                          "--shard-group", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: recipe hardware.shard_group: 2 does not divide the 1 processes")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_each_process_holds_its_groups_shard_and_steps_as_one():
    """4 processes: shard groups of 2 (HSDP 2 x 2) and of 1 (every process a whole replica), a dense model;
    each parameter is Replicate() across the groups and split in rows inside one (asserted in the script)."""
    for layout, diffs in run_layouts("1:2:0", "1:1:0").items():
        assert diffs["loss_diff"] < 1e-5 and diffs["grad_diff"] < 1e-6 and diffs["norm_diff"] < 1e-5, (layout, diffs)


@pytest.mark.slow
def test_hsdp_trains_as_one_process_and_resumes_on_another_layout(tmp_path):
    """HSDP 2 x 2 trains steps 1-3 and saves them as shards (torch.distributed.checkpoint); 2 processes
    without HSDP resume from those shards to step 6. Every step's loss and the final model equal one
    process's."""
    recipe = tiny_recipe(train={"max_steps": 6, "eval_every": 0, "save_every": 3, "sample_tokens": 0})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    train(recipe, tmp_path / "one", progress=False)

    run = tmp_path / "hsdp-then-fsdp"
    first = torchrun(4, "--recipe", path, "--out", run, "--max-steps", 3, "--shard-group", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    shards = sorted(p.name for p in (run / "checkpoints" / "step-000003" / "shards").iterdir())
    assert len(shards) == 4  # each process wrote its own file; nothing was gathered
    second = torchrun(2, "--recipe", path, "--out", run, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert records(run, "resume")[-1]["from_step"] == 3

    ours, theirs = records(run, "train"), records(tmp_path / "one", "train")
    assert [r["step"] for r in ours] == list(range(1, 7))
    for key in ("loss", "grad_norm"):
        torch.testing.assert_close(torch.tensor([r[key] for r in ours]), torch.tensor([r[key] for r in theirs]),
                                   rtol=1e-5, atol=1e-5, msg=key)
    difference = max(abs(a["loss"] - b["loss"]) for a, b in zip(ours, theirs))
    print(f"largest loss difference against one process: {difference:.2e}")
    a, b = lab.load_pretrained(tmp_path / "one" / "final"), lab.load_pretrained(run / "final")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5, msg=name)


def test_the_planner_prints_the_options_that_give_the_trainer_its_layout(capsys):
    """The plan's shard group and EP size are the trainer's --shard-group and --expert-parallel, and every
    layout it picks passes the trainer's check (an EP group inside a shard group)."""
    from lab.cli import main
    from lab.paths import ROOT
    from lab.planner import GPUS, plan, trainer_options, workloads

    assert main(["plan", "--recipe", str(ROOT / "recipes" / "aquila-8x16b.yaml"), "--gpus", "64", "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    assert "train it so: torchrun over 64 GPUs with --shard-group 32 --expert-parallel 8" in out
    assert "expert parallel 8 (1 expert per GPU), stored sharded over the 4 GPUs" in out
    assert "weights, gradients, AdamW 51.6" in out  # 16 bytes x 103.22B parameters / 32
    for work in workloads(ROOT / "recipes" / "aquilamoe.yaml"):
        for gpus, gpu in ((64, "h200"), (1024, "h100")):
            p = plan(work, gpus, GPUS[gpu])
            check_shard_group(p.shard_group, p.expert_parallel, p.gpus)
            assert ("--shard-group" in trainer_options(p)) == (p.shard_group < p.gpus)
