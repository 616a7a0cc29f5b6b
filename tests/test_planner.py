"""`python -m lab plan`: the paper's pipeline fits 1024 H100s and not 8, with the reason; the memory
arithmetic is the stated model, exactly; bad input is one error line."""

from __future__ import annotations

import pytest

from lab.cli import main
from lab.config import ModelConfig
from lab.flops import total_parameters
from lab.paths import ROOT
from lab.planner import GB, GPUS, STATE_BYTES_PER_PARAMETER, Workload, plan

AQUILAMOE = str(ROOT / "recipes" / "aquilamoe.yaml")


def test_the_paper_pipeline_fits_1024_h100_with_a_layout_per_stage(capsys):
    assert main(["plan", "--recipe", AQUILAMOE, "--gpus", "1024", "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    for stage in ("aquila-7b: 7.01B parameters", "aquila-16b: 15.14B", "aquila-8x16b: 103.22B parameters, 27.73B active",
                  "baseline (from scratch)"):
        assert stage in out
    assert out.count("layout: HSDP") == 4 and "expert parallel 8 (1 expert per GPU)" in out
    assert "the recipe asks 2,944, which does not split evenly over 1024 GPUs" in out


def test_eight_gpus_refuse_the_8x16b_and_say_what_it_needs(capsys):
    assert main(["plan", "--recipe", AQUILAMOE, "--gpus", "8", "--gpu", "h100"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: aquila-8x16b (103.22B parameters) does not fit 8 H100")
    assert "206 GB per GPU fully sharded" in err[0] and "it needs at least 32 GPUs (4 nodes of 8)" in err[0]


def test_memory_is_the_stated_model_and_never_exceeds_the_gpu():
    cfg = ModelConfig(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
                      n_experts=8, top_k=2)
    work = Workload("8x7b", cfg, seq_len=4096, global_sequences=1024, compute_bytes=2, steps=0)
    for gpus in (64, 256):
        p = plan(work, gpus, GPUS["h100"])
        assert p.memory["weights, gradients, AdamW"] == STATE_BYTES_PER_PARAMETER * total_parameters(cfg) / p.shard_group
        assert p.memory_total <= 0.9 * 80 * GB
        assert p.gpus % p.shard_group == 0 and p.shard_group % p.expert_parallel == 0
        assert p.micro_batch * p.grad_accum * gpus == 1024  # this batch splits evenly: exactly the recipe's
    # More memory per GPU never needs a bigger shard group.
    assert plan(work, 64, GPUS["h200"]).shard_group <= plan(work, 64, GPUS["h100"]).shard_group


def test_one_gpu_runs_the_tiny_recipe_unsharded(capsys):
    assert main(["plan", "--recipe", str(ROOT / "recipes" / "tiny.yaml"), "--gpus", "1", "--gpu", "h200"]) == 0
    out = capsys.readouterr().out
    assert "one GPU, nothing sharded" in out and "activation checkpointing off" in out


@pytest.mark.parametrize("args, message", [
    (["--gpus", "12"], "--gpus: 12 is not a whole number of 8-GPU nodes"),
    (["--gpus", "0"], "argument --gpus"),
    (["--gpus", "8", "--gpu", "tpu"], "argument --gpu: invalid choice"),
])
def test_bad_input_is_one_error_line(args, message, capsys):
    assert main(["plan", "--recipe", AQUILAMOE, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
