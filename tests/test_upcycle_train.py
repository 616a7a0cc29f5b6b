"""Continued pretraining of an upcycled model: the experts drift apart, the checkpoint still means the
same thing in transformers as in the lab, and the metrics carry expert load and the auxiliary losses."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import lab
from lab import DecoderLM, ModelConfig
from lab.data import DATA_DIR
from lab.train import load_recipe, train
from lab.upcycle import UpcyclePlan
from lab.derive import upcycle_checkpoint

E, K = 4, 2
pytestmark = pytest.mark.slow  # about 10 s: the shipped corpus is tokenised once for the run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dense model (the shipped tokenizer's vocabulary), upcycled to 4 experts top-2, then 4 steps."""
    root = tmp_path_factory.mktemp("upcycle-train")
    torch.manual_seed(0)
    dense = DecoderLM(ModelConfig(vocab_size=4096, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
                                  qkv_bias=False, max_seq_len=64))
    lab.save_pretrained(dense, root / "dense", tokenizer_dir=DATA_DIR)
    moe = upcycle_checkpoint(root / "dense", root / "moe", UpcyclePlan(n_experts=E, top_k=K, seed=1))
    recipe = load_recipe({
        "run": "upcycled", "stage": "scale-out", "seed": 0, "init_from": str(moe),
        "data": {"seq_len": 32, "batch_size": 4},
        "optim": {"lr": 1e-2, "warmup_steps": 0, "schedule": "constant"},
        "train": {"max_steps": 4, "eval_every": 0, "save_every": 0, "eval_sequences": 1, "sample_tokens": 0},
    })
    summary = train(recipe, root / "run", progress=False)
    return root, summary


def test_trained_upcycled_checkpoint_equals_transformers(trained):
    root, summary = trained
    path = summary["checkpoint"]
    ours = lab.load_pretrained(path)
    w_up = ours.layers[0].mlp.w_up
    assert all(not torch.equal(w_up[i], w_up[j]) for i in range(E) for j in range(i + 1, E))  # experts now differ
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    ids = torch.randint(0, 4096, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-5)


def test_metrics_carry_expert_load_and_aux_losses(trained):
    root, _ = trained
    records = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r.get("event") == "train"]
    assert steps
    for r in steps:
        load = r["tokens_per_expert"]
        assert len(load) == 2 and all(len(layer) == E for layer in load)
        assert all(sum(layer) == 4 * 32 * K for layer in load)  # every token's k assignments, per layer
        assert r["aux_loss"] >= 0 and r["z_loss"] > 0
