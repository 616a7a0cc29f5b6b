"""Training runs on the shipped data: exact resume, MoE metrics, checkpoints, and one-line refusals."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import lab
from lab.cli import main
from lab.errors import LabError
from lab.train import train
from lab.train.state import CHECKPOINTS, STATE_JSON, complete_checkpoints
from train_fixtures import records, tiny_recipe


def test_resume_equals_a_straight_run(tmp_path):
    """20 steps, then --resume to 40, is 40 steps straight: same losses, same weights (bitwise on CPU)."""
    recipe = tiny_recipe(train={"max_steps": 40, "eval_every": 20, "save_every": 20, "sample_tokens": 0},
                         data={"grad_accum": 2})
    straight = train(recipe, tmp_path / "straight", progress=False)
    first = train(recipe, tmp_path / "split", max_steps=20, progress=False)
    assert first["step"] == 20
    resumed = train(recipe, tmp_path / "split", resume=True, progress=False)
    assert resumed["step"] == straight["step"] == 40 and resumed["tokens"] == straight["tokens"]
    assert abs(resumed["loss"] - straight["loss"]) <= 1e-6
    a, b = records(tmp_path / "straight", "train"), records(tmp_path / "split", "train")
    assert [r["step"] for r in b] == list(range(1, 41))  # nothing duplicated, nothing missing
    torch.testing.assert_close(torch.tensor([r["loss"] for r in b]), torch.tensor([r["loss"] for r in a]),
                               rtol=0, atol=1e-6)
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], abs=1e-6)
    wa = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "split" / "final" / "model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-6)
    assert [r["from_step"] for r in records(tmp_path / "split", "resume")] == [20]


def test_loss_falls_and_metrics_follow_the_schema(tmp_path):
    summary = train(tiny_recipe(hardware={"peak_tflops": 1.0}), tmp_path / "run", progress=False)
    train_records = records(tmp_path / "run", "train")
    evals = records(tmp_path / "run", "eval")
    for r in train_records:
        assert {"run", "stage", "step", "tokens", "flops", "loss", "lm_loss", "lr", "grad_norm",
                "tokens_per_s", "mfu", "time"} <= set(r)
        assert r["tokens"] == r["step"] * 4 * 32 and r["flops"] > 0 and 0 < r["mfu"]
        assert "tokens_per_expert" not in r  # dense
    assert [e["step"] for e in evals] == [0, 5, 10]
    assert all("tokens_per_expert_by_domain" not in e for e in evals)  # dense
    assert evals[0]["val_loss_mean"] == pytest.approx(math.log(4096), abs=0.1)  # a fresh model guesses
    assert evals[-1]["val_loss_mean"] < evals[0]["val_loss_mean"] - 0.5
    assert set(evals[0]["val_loss"]) == set(lab.data.DOMAINS)
    samples = records(tmp_path / "run", "sample")
    assert len(samples) == 3 and set(samples[-1]["samples"]) == set(lab.data.DOMAINS)
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["recipe"]["model"]["dim"] == 32 and meta["environment"]["world_size"] == 1
    assert meta["flops_per_token"] == lab.flops.flops_per_token(lab.ModelConfig(**meta["model"]), 32)
    assert summary["val_loss"] == evals[-1]["val_loss"]


def test_moe_metrics_carry_expert_load_and_aux_losses(tmp_path):
    recipe = tiny_recipe(model={"n_experts": 4, "top_k": 2, "moe_ffn_dim": 32}, train={"max_steps": 3})
    train(recipe, tmp_path / "moe", progress=False)
    for r in records(tmp_path / "moe", "train"):
        assert len(r["tokens_per_expert"]) == 2 and len(r["tokens_per_expert"][0]) == 4
        assert all(sum(layer) == 4 * 32 * 2 for layer in r["tokens_per_expert"])  # B * T * top_k
        assert r["aux_loss"] >= 1.0 - 1e-4  # 1 at perfect balance, more otherwise
        assert r["z_loss"] > 0 and 0 < r["router_entropy"] <= math.log(4) + 1e-6
        # The minimised loss adds the auxiliary losses with the config's coefficients.
        assert r["loss"] == pytest.approx(r["lm_loss"] + 0.001 * r["aux_loss"] + 0.01 * r["z_loss"], rel=1e-5)
    # Evaluations record where each domain's validation windows go: every window token, top_k times.
    evals = records(tmp_path / "moe", "eval")
    assert evals
    for r in evals:
        loads = r["tokens_per_expert_by_domain"]
        assert set(loads) == set(r["val_loss"])
        for domain, layers in loads.items():
            assert len(layers) == 2 and all(len(layer) == 4 for layer in layers)
            # every layer routes the same tokens: whole windows of T = 32, top_k = 2 times each
            assert len({sum(layer) for layer in layers}) == 1 and sum(layers[0]) > 0 and sum(layers[0]) % (32 * 2) == 0
    model = lab.load_pretrained(tmp_path / "moe" / "final")
    assert model.config.n_experts == 4


def test_checkpoints_are_hugging_face_directories(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train(tiny_recipe(), tmp_path / "run", progress=False)
    steps = [step for step, _ in complete_checkpoints(tmp_path / "run")]
    assert steps == [5, 10]
    final = tmp_path / "run" / "final"
    ours = lab.load_pretrained(final)
    theirs = AutoModelForCausalLM.from_pretrained(final).eval()
    ids = AutoTokenizer.from_pretrained(final)("12 + 34 = 46", return_tensors="pt").input_ids
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=1e-5, atol=1e-5)
    state = json.loads((tmp_path / "run" / CHECKPOINTS / "step-000010" / STATE_JSON).read_text())
    assert state["step"] == 10 and state["tokens"] == 10 * 4 * 32


def test_start_from_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    source = lab.DecoderLM(lab.ModelConfig(dim=48, n_layers=1, n_heads=4, ffn_dim=64, max_seq_len=64))
    lab.save_pretrained(source, tmp_path / "src")
    summary = train(tiny_recipe(train={"max_steps": 2}), tmp_path / "run", init_from=tmp_path / "src", progress=False)
    assert summary["step"] == 2
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["model"]["dim"] == 48 and meta["recipe"]["init_from"] == str(tmp_path / "src")
    # The evaluation before the first step is the source model's own loss.
    ids = lab.data.validation_batches(lab.data.load_tokens("validation"), 32, 2)["english"]
    before = records(tmp_path / "run", "eval")[0]["val_loss"]["english"]
    assert before == pytest.approx(source(ids, labels=ids).lm_loss.item(), abs=1e-5)


def test_bf16_autocast_trains(tmp_path):
    summary = train(tiny_recipe(train={"max_steps": 3, "precision": "bf16", "sample_tokens": 0}), tmp_path / "run",
                    progress=False)
    assert math.isfinite(summary["loss"])
    assert lab.load_pretrained(tmp_path / "run" / "final").tok_embeddings.weight.dtype == torch.float32


def test_half_written_checkpoints_are_never_picked_up(tmp_path):
    recipe = tiny_recipe(train={"max_steps": 10, "sample_tokens": 0})
    train(recipe, tmp_path / "run", max_steps=5, progress=False)
    ckpts = tmp_path / "run" / CHECKPOINTS
    # What a kill -9 in the middle of writing step 6 leaves, and a step directory without its state.
    # (the names the writer gives: lab.train.state, a hidden directory with 8 hex digits of a uuid)
    (ckpts / ".step-000006.partial-deadbeef").mkdir()
    (ckpts / ".step-000006.partial-deadbeef" / "model.safetensors").write_bytes(b"half")
    (ckpts / "step-000007").mkdir()
    (ckpts / "step-000007" / "config.json").write_text("{}")
    assert [s for s, _ in complete_checkpoints(tmp_path / "run")] == [5]
    summary = train(recipe, tmp_path / "run", resume=True, progress=False)
    assert summary["step"] == 10 and records(tmp_path / "run", "resume")[0]["from_step"] == 5
    assert not (ckpts / ".step-000006.partial-deadbeef").exists()


def test_the_checkpoint_writers_own_temporary_is_removed_too(tmp_path):
    # A SIGKILL inside the checkpoint writer leaves the temporary it fills before the rename:
    # ".<partial dir>.tmp-<pid>-<8 hex>", a hidden name inside a hidden name. Found by a hard-kill test.
    recipe = tiny_recipe(train={"max_steps": 10, "sample_tokens": 0})
    train(recipe, tmp_path / "run", max_steps=5, progress=False)
    ckpts = tmp_path / "run" / CHECKPOINTS
    leftover = ckpts / "..step-000006.partial-72fce128.tmp-32543-497a7384"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half")
    (ckpts / ".git").mkdir()  # not the lab's: kept
    train(recipe, tmp_path / "run", resume=True, progress=False)
    assert not leftover.exists() and (ckpts / ".git").is_dir()


def run_cli(*args):
    return main(["train", *map(str, args), "--quiet"])


def write_recipe(path, recipe):
    import yaml

    path.write_text(yaml.safe_dump(recipe))
    return path


def test_refusals_are_one_line(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(train={"max_steps": 2, "sample_tokens": 0}))
    other = write_recipe(tmp_path / "other.yaml", tiny_recipe(train={"max_steps": 3}))
    run = tmp_path / "run"

    def refused(*args, expect):
        assert run_cli(*args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expect in err and "\n" not in err, err

    refused("--recipe", recipe, "--out", run, "--resume", expect="nothing to resume")
    assert not run.exists()
    missing = write_recipe(tmp_path / "m.yaml", tiny_recipe(data={"corpus": str(tmp_path / "nope.jsonl")}))
    refused("--recipe", missing, "--out", run, expect="no such corpus file")
    assert not run.exists()
    refused("--recipe", recipe, "--out", run, "--init", tmp_path / "nothing", expect="not a directory")
    assert not run.exists()
    assert run_cli("--recipe", recipe, "--out", run) == 0
    capsys.readouterr()
    refused("--recipe", other, "--out", run, expect="already holds run 'test' (its recipe differs")
    refused("--recipe", other, "--out", run, "--resume", expect="with a different recipe")
    refused("--recipe", recipe, "--out", run, expect="pass --resume to continue it")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    refused("--recipe", recipe, "--out", tmp_path / "full", expect="exists and is not an empty directory")


def test_a_run_that_is_done_resumes_to_nothing_new(tmp_path):
    recipe = tiny_recipe(train={"max_steps": 2, "sample_tokens": 0})
    train(recipe, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    summary = train(recipe, tmp_path / "run", resume=True, progress=False)
    assert summary["step"] == 2
    after = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert after.startswith(before) and len(records(tmp_path / "run", "train")) == 2


def test_bad_max_steps():
    with pytest.raises(LabError, match="max_steps must be a positive integer"):
        train(tiny_recipe(), "unused", max_steps=0)
