"""Expert parallelism (lab.expert_parallel): the dispatch by all-to-all computes what the unsharded MoE
layer computes, and `--expert-parallel 2` on 2 gloo processes trains `recipes/tiny-moe.yaml` as one
process does: the same losses, tokens per expert and checkpoints, and a run resumes under another EP size.
On 4 processes the experts are sharded over the processes that hold the same experts too: each process
holds E / (R * 2) of them (or half of each, when there are fewer than that), and trains as one process."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import lab
from lab.errors import LabError, RecipeError
from lab.expert_parallel import check_expert_parallel, local_experts, received_order
from lab.moe import combine, grouped_experts, sort_by_expert
from lab.train import load_recipe, train
from mesh_layouts import run_layouts
from train_fixtures import records, tiny_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STEPS = 10


def simulated_dispatch(xs, weights, experts, w_gate, w_up, w_down):
    """`ExpertShard.routed_experts` for R processes in one: each all-to-all is done by slicing.

    xs, weights, experts: one (N_r, D), (N_r, K), (N_r, K) per simulated process r; w_* whole (E, ...).
    """
    R, E = len(xs), w_gate.shape[0]
    L = E // R
    plans = [sort_by_expert(experts_NK, E) for experts_NK in experts]
    send_counts = [counts_E.view(R, L) for _, _, counts_E in plans]
    # Process r's rows sorted by expert, cut into one block per destination.
    sent = [x_ND[token_M].split(c.sum(dim=1).tolist()) for x_ND, (_, token_M, _), c in zip(xs, plans, send_counts)]
    answers = []  # answers[q][r]: process q's expert outputs for the rows r sent it
    for q in range(R):
        recv_counts_RL = torch.stack([send_counts[r][q] for r in range(R)])
        x_recv_PD = torch.cat([sent[r][q] for r in range(R)])
        mine = slice(q * L, (q + 1) * L)
        y_recv_PD = local_experts(x_recv_PD, recv_counts_RL, w_gate[mine], w_up[mine], w_down[mine])
        answers.append(y_recv_PD.split(recv_counts_RL.sum(dim=1).tolist()))
    outs = []
    for r, (x_ND, (order_M, token_M, _)) in enumerate(zip(xs, plans)):
        y_back_MD = torch.cat([answers[q][r] for q in range(R)])
        outs.append(combine(y_back_MD, weights[r], order_M, token_M, x_ND))
    return outs


def test_received_rows_are_grouped_by_local_expert():
    # Two senders, two local experts: sender 0 sends 2 rows for expert 0 and 1 for expert 1, sender 1 sends
    # 0 and 2. Rows arrive as [s0e0, s0e0, s0e1, s1e1, s1e1].
    order, counts = received_order(torch.tensor([[2, 1], [0, 2]]))
    assert order.tolist() == [0, 1, 2, 3, 4] and counts.tolist() == [2, 3]
    order, counts = received_order(torch.tensor([[1, 1], [2, 0]]))  # [s0e0, s0e1, s1e0, s1e0]
    assert order.tolist() == [0, 2, 3, 1] and counts.tolist() == [3, 1]


@pytest.mark.parametrize("R", [2, 4])
def test_dispatch_by_all_to_all_equals_the_unsharded_layer(R):
    torch.manual_seed(0)
    E, K, D, F = 8, 2, 16, 24
    w_gate, w_up, w_down = torch.randn(E, F, D), torch.randn(E, F, D), torch.randn(E, D, F)
    sizes = [5, 9, 1, 7][:R]
    xs = [torch.randn(n, D) for n in sizes]
    experts = [torch.rand(n, E).topk(K, dim=-1).indices for n in sizes]
    experts[0] = torch.tensor([[0, 1]] * sizes[0])  # process 0 sends everything to process 0's experts
    weights = [torch.rand(n, K).softmax(dim=-1) for n in sizes]
    outs = simulated_dispatch(xs, weights, experts, w_gate, w_up, w_down)
    for r in range(R):
        expected = grouped_experts(xs[r], weights[r], experts[r], w_gate, w_up, w_down)
        torch.testing.assert_close(outs[r], expected, rtol=1e-5, atol=1e-5)


def test_expert_parallel_is_checked_before_a_run_starts(tmp_path):
    moe = load_recipe(RECIPES / "tiny-moe.yaml").model
    dense = load_recipe(RECIPES / "tiny.yaml").model
    check_expert_parallel(1, dense, 1)  # no expert parallelism: nothing to check
    check_expert_parallel(2, moe, 4)
    for size, cfg, world, says in [(3, moe, 3, "does not divide the model's 8 experts"), (2, dense, 2, "dense"),
                                   (2, moe, 1, "needs 2 processes"), (4, moe, 6, "does not divide the 6 processes")]:
        with pytest.raises(RecipeError, match=says) as e:
            check_expert_parallel(size, cfg, world)
        assert e.value.key == "hardware.expert_parallel"
    with pytest.raises(LabError, match="hardware.expert_parallel"):
        load_recipe(tiny_recipe(hardware={"expert_parallel": 0}))
    # From the command line: one error line, exit 2, nothing written.
    out = subprocess.run([sys.executable, "-m", "lab", "train", "--recipe", "tiny-moe", "--out", tmp_path / "run",
                          "--expert-parallel", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: recipe hardware.expert_parallel: 2 needs 2 processes")
    assert not (tmp_path / "run").exists()


def torchrun(*args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "lab", "train", *map(str, args), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)


def assert_same_losses(run, reference, steps):
    ours = {r["step"]: r for r in records(run, "train")}
    theirs = {r["step"]: r for r in records(reference, "train")}
    assert sorted(ours) == list(steps)
    for key in ("loss", "lm_loss", "aux_loss", "z_loss"):
        torch.testing.assert_close(torch.tensor([ours[s][key] for s in steps], dtype=torch.float64),
                                   torch.tensor([theirs[s][key] for s in steps], dtype=torch.float64),
                                   rtol=0, atol=1e-5, msg=f"{run.name}: {key}")
    assert [ours[s]["tokens_per_expert"] for s in steps] == [theirs[s]["tokens_per_expert"] for s in steps]


def assert_same_model(ours: Path, theirs: Path):
    """Equal to 1e-5, but for the odd element whose gradient is at the level of fp32 rounding all along:
    AdamW divides it by its own root mean square (~1e-9, near eps), so the reduction order decides the
    direction of its steps, of size lr. At most 1 element in 100,000 may differ, by under 1e-4."""
    a, b = lab.load_pretrained(ours).state_dict(), lab.load_pretrained(theirs).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        difference = (a[name].float() - b[name].float()).abs()
        assert difference.max() < 1e-4 and (difference > 1e-5).float().mean() <= 1e-5, name


def cut_back_to(run: Path, step: int) -> None:
    """Leave run's checkpoints up to `step` only, as if it had stopped there."""
    shutil.rmtree(run / "final")
    for path in (run / "checkpoints").iterdir():
        if int(path.name.split("-")[1]) > step:
            shutil.rmtree(path)


@pytest.mark.slow
def test_two_expert_parallel_processes_train_as_one(tmp_path):
    recipe = yaml.safe_load((RECIPES / "tiny-moe.yaml").read_text())
    recipe["train"].update(eval_every=0, save_every=STEPS // 2, sample_tokens=0, log_every=1)
    path = tmp_path / "tiny-moe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    one, two = tmp_path / "one", tmp_path / "two"
    train(recipe, one, max_steps=STEPS, progress=False)

    result = torchrun("--recipe", path, "--out", two, "--max-steps", STEPS, "--expert-parallel", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_losses(two, one, range(1, STEPS + 1))
    assert all(sum(layer) == 16 * 128 * 2 for layer in records(two, "train")[0]["tokens_per_expert"])
    # The model written holds whole tensors, whatever the EP size: the one process's. (The step checkpoints,
    # model and optimizer state, are read back below, by runs resumed under the other EP size.)
    assert_same_model(two / "final", one / "final")

    # EP 2 -> 1 process: resume the EP run's middle checkpoint on one process.
    two_then_one = tmp_path / "two-then-one"
    shutil.copytree(two, two_then_one)
    cut_back_to(two_then_one, STEPS // 2)
    train(recipe, two_then_one, max_steps=STEPS, resume=True, progress=False)
    assert_same_losses(two_then_one, one, range(1, STEPS + 1))

    # 1 process -> EP 2: each process reads its experts' rows of the checkpoint and its optimizer state.
    one_then_two = tmp_path / "one-then-two"
    shutil.copytree(one, one_then_two)
    cut_back_to(one_then_two, STEPS // 2)
    result = torchrun("--recipe", path, "--out", one_then_two, "--max-steps", STEPS, "--resume",
                      "--expert-parallel", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_losses(one_then_two, one, range(1, STEPS + 1))
    assert_same_model(one_then_two / "final", one / "final")


@pytest.mark.slow
def test_each_process_holds_only_its_slice_of_the_experts():
    """4 processes (mesh_layouts.py asserts every local shape): EP 2 with 8 experts, each process 2 whole
    experts (4 per EP rank, sharded over the 2 processes holding them); EP 2 with 2 experts, each process
    half of its expert's columns; EP 2 in HSDP shard groups of 2 (the experts replicated across the groups);
    EP 4. One forward and backward equals the unsharded model's on the whole batch."""
    for layout, diffs in run_layouts("2:-:8", "2:-:2", "2:2:8", "4:-:8").items():
        assert diffs["loss_diff"] < 1e-5 and diffs["grad_diff"] < 1e-6 and diffs["norm_diff"] < 1e-5, (layout, diffs)



@pytest.mark.slow
def test_experts_sharded_inside_hsdp_shard_groups_on_eight_processes():
    """8 processes, HSDP shard groups of 4 holding EP 2: each EP rank's 4 experts split over the 2
    processes of its shard group that hold them, and the whole layout replicated across the 2 groups
    (the planner's layout for many nodes, the one the 4-process test cannot reach). One forward and
    backward equals the unsharded model's on the whole batch."""
    for layout, diffs in run_layouts("2:4:8", nproc=8).items():
        assert diffs["loss_diff"] < 1e-5 and diffs["grad_diff"] < 1e-6 and diffs["norm_diff"] < 1e-5, (layout, diffs)

@pytest.mark.slow
def test_experts_sharded_over_data_parallel_train_as_one_process(tmp_path):
    """EP 2 on 4 processes (experts sharded over the 2 processes holding the same ones) trains steps 1-3 and
    saves them as shards; EP 2 on 2 processes (nothing to shard them over) resumes to step 6. The losses,
    tokens per expert and the final model equal one process's."""
    recipe = tiny_recipe(model={"n_experts": 8, "top_k": 2, "moe_ffn_dim": 32},
                         train={"max_steps": 6, "eval_every": 0, "save_every": 3, "sample_tokens": 0})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    one, run = tmp_path / "one", tmp_path / "four-then-two"
    train(recipe, one, progress=False)

    first = torchrun("--recipe", path, "--out", run, "--max-steps", 3, "--expert-parallel", 2, nproc=4)
    assert first.returncode == 0, first.stderr[-3000:]
    second = torchrun("--recipe", path, "--out", run, "--resume", "--expert-parallel", 2)
    assert second.returncode == 0, second.stderr[-3000:]
    assert records(run, "resume")[-1]["from_step"] == 3
    assert_same_losses(run, one, range(1, 7))
    assert_same_model(run / "final", one / "final")
    difference = max(abs(a["loss"] - b["loss"]) for a, b in zip(records(run, "train"), records(one, "train")))
    print(f"largest loss difference against one process: {difference:.2e}")
