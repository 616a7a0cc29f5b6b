"""Sparse upcycling: the upcycled checkpoint opens in transformers and equals its dense source where the
operators promise it (default routing, virtual groups, every n-th layer), and differs where they say so."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers
from hf_models import tiny_hf_model

import lab
from lab import DecoderLM, ModelConfig
from lab.checkpoint import CheckpointSource
from lab.moe import route
from lab.upcycle import UpcyclePlan, router_weight
from lab.derive import upcycle_checkpoint, upcycle_model
from lab.upcycle.drop import n_dropped


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Dense tiny checkpoints (transformers' own), saved once: name -> (directory, hf model)."""
    root = tmp_path_factory.mktemp("dense")
    made = {}
    for name, kind, overrides in [("llama", "llama", {}), ("qwen2", "qwen2", {}),
                                  ("llama4", "llama", dict(num_hidden_layers=4)),
                                  ("tied", "llama", dict(tie_word_embeddings=True))]:
        hf = tiny_hf_model(kind, seed=2, **overrides)
        hf.save_pretrained(root / name)
        made[name] = (root / name, hf)
    return made


def hf_logits(path_or_model, ids):
    model = path_or_model
    if not isinstance(model, torch.nn.Module):
        model = transformers.AutoModelForCausalLM.from_pretrained(path_or_model).eval()
    with torch.no_grad():
        return model(ids).logits


def upcycled(sources, name, tmp_path, **plan):
    src, hf = sources[name]
    out = upcycle_checkpoint(src, tmp_path / "moe", UpcyclePlan(**plan))
    return src, hf, out


@pytest.mark.parametrize("name, model_type", [("llama", "mixtral"), ("qwen2", "qwen2_moe"), ("tied", "mixtral")])
@pytest.mark.parametrize("plan", [dict(), dict(n_experts=16, top_k=4, granularity=2)], ids=["8e-top2", "16e-top4-G2"])
def test_upcycled_checkpoint_equals_the_dense_source_in_transformers(sources, name, model_type, plan, ids, tmp_path):
    """The invariant of sparse upcycling with topk_softmax: copied (or virtual-group sliced and scaled)
    experts compute the dense MLP, whatever the router."""
    _, hf, out = upcycled(sources, name, tmp_path, **plan)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == model_type
    assert (config["router_aux_loss_coef"], config["router_z_loss_coef"]) == (0.001, 0.01)
    moe = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert sum("experts" in n for n, _ in moe.named_parameters()) > 0
    torch.testing.assert_close(hf_logits(moe, ids), hf_logits(hf, ids), rtol=0, atol=1e-5)
    # ... and the lab reads the same model back.
    torch.testing.assert_close(lab.load_pretrained(out)(ids).logits, hf_logits(hf, ids), rtol=0, atol=1e-5)


def test_in_memory_upcycle_is_the_streamed_checkpoint(sources, tmp_path):
    """One rule, two paths: randomness is keyed by (seed, layer, expert), not by the order of writing."""
    plan = UpcyclePlan(n_experts=8, top_k=4, granularity=2, drop_ratio=0.25, noise=0.01, seed=7)
    src, _, out = upcycled(sources, "qwen2", tmp_path, **plan.__dict__)
    streamed = lab.load_pretrained(out).state_dict()
    in_memory = upcycle_model(lab.load_pretrained(src), plan).state_dict()
    assert streamed.keys() == in_memory.keys()
    for name in streamed:
        torch.testing.assert_close(in_memory[name], streamed[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("std", [0.02, math.sqrt(0.02)], ids=["std-0.02", "variance-0.02"])
def test_router_has_the_requested_std(std):
    torch.manual_seed(0)
    dense = DecoderLM(ModelConfig(vocab_size=16, dim=2048, n_layers=2, n_heads=16, ffn_dim=32, qkv_bias=False))
    moe = upcycle_model(dense, UpcyclePlan(router_init_std=std, seed=3))
    for layer in moe.layers:
        w = layer.mlp.router.weight  # (8, 2048): 16k draws, the std's standard error is 0.6%
        assert abs(w.std().item() / std - 1) < 0.05
        assert abs(w.mean().item()) < 0.05 * std
    assert not torch.equal(moe.layers[0].mlp.router.weight, moe.layers[1].mlp.router.weight)
    again = upcycle_model(dense, UpcyclePlan(router_init_std=std, seed=3))
    assert torch.equal(again.layers[0].mlp.router.weight, moe.layers[0].mlp.router.weight)
    other = upcycle_model(dense, UpcyclePlan(router_init_std=std, seed=4))
    assert not torch.equal(other.layers[0].mlp.router.weight, moe.layers[0].mlp.router.weight)


def test_virtual_groups_fire_together_and_slice_the_dense_mlp(sources, tmp_path):
    src, _, out = upcycled(sources, "llama", tmp_path, n_experts=16, top_k=4, granularity=2)
    G = 2
    router = router_weight(UpcyclePlan(n_experts=16, top_k=4, granularity=G), 0, 64)
    torch.testing.assert_close(router[0::G], router[1::G], rtol=0, atol=0)  # one row per group
    x = torch.randn(2000, 64, generator=torch.Generator().manual_seed(0))
    chosen = route(x, router, 4, "topk_softmax").experts // G  # the group of each chosen expert
    counts = torch.stack([(chosen == g).sum(-1) for g in range(16 // G)], dim=-1)  # (N, groups)
    assert set(counts.unique().tolist()) == {0, G}  # a group is chosen whole, or not at all
    with CheckpointSource(src) as dense, CheckpointSource(out) as moe:
        gate = moe.tensor("layers.1.mlp.w_gate")  # (16, 48, 64)
        down = moe.tensor("layers.1.mlp.w_down")  # (16, 64, 48)
        for g in range(8):
            torch.testing.assert_close(torch.cat([gate[g * G], gate[g * G + 1]]), dense.tensor("layers.1.mlp.gate_proj.weight"))
            torch.testing.assert_close(torch.cat([down[g * G], down[g * G + 1]], dim=1) / G,
                                       dense.tensor("layers.1.mlp.down_proj.weight"))


def test_softmax_topk_is_close_with_weight_scaling_and_far_without(sources, ids, tmp_path):
    """softmax_topk does not renormalise: at init the chosen weights sum to about k/E, and He et al.'s
    weight scaling (E*G/k) brings the output back near the dense model, but not onto it."""
    src, hf = sources["qwen2"]
    dense = hf_logits(hf, ids)
    gaps = {}
    for scaling in (True, False):
        out = upcycle_checkpoint(src, tmp_path / f"moe-{scaling}",
                                 UpcyclePlan(n_experts=16, top_k=4, granularity=2, routing="softmax_topk",
                                             weight_scaling=scaling))
        assert json.loads((out / "config.json").read_text())["norm_topk_prob"] is False
        gaps[scaling] = (hf_logits(out, ids) - dense).abs().max().item()
    assert 0 < gaps[True] < gaps[False]


def test_every_nth_layer(sources, ids, tmp_path):
    src, hf, out = upcycled(sources, "llama4", tmp_path, every=2)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2_moe" and config["mlp_only_layers"] == [0, 2]
    assert lab.load_pretrained(out).config.moe_layers == (1, 3)
    torch.testing.assert_close(hf_logits(out, ids), hf_logits(hf, ids), rtol=0, atol=1e-5)


@pytest.mark.parametrize("ratio, granularity", [(0.5, 1), (0.25, 2), (1.0, 1)])
def test_drop_upcycling_reinitialises_the_requested_fraction_of_each_expert(sources, ids, tmp_path, ratio, granularity):
    src, hf, out = upcycled(sources, "llama", tmp_path, n_experts=4, top_k=2, granularity=granularity,
                            drop_ratio=ratio, seed=1)
    with CheckpointSource(src) as dense, CheckpointSource(out) as moe:
        for layer in range(2):
            d = {w: dense.tensor(f"layers.{layer}.mlp.{p}.weight").chunk(granularity, dim=int(w == "w_down"))
                 for w, p in [("w_gate", "gate_proj"), ("w_up", "up_proj"), ("w_down", "down_proj")]}
            m = {w: moe.tensor(f"layers.{layer}.mlp.{w}") for w in d}
            dropped_sets = []
            for e in range(4):
                s = e % granularity
                changed_gate = (m["w_gate"][e] != d["w_gate"][s]).any(dim=1)
                changed_up = (m["w_up"][e] != d["w_up"][s]).any(dim=1)
                changed_down = (m["w_down"][e] / granularity != d["w_down"][s]).any(dim=0)
                assert changed_gate.sum().item() == n_dropped(96 // granularity, ratio)
                assert torch.equal(changed_gate, changed_up) and torch.equal(changed_gate, changed_down)
                dropped_sets.append(changed_gate)
            assert all(not torch.equal(a, b) for i, a in enumerate(dropped_sets) for b in dropped_sets[i + 1:]) \
                or ratio == 1.0
            for w in m:  # experts differ pairwise
                assert all(not torch.equal(m[w][i], m[w][j]) for i in range(4) for j in range(i + 1, 4))
    assert (hf_logits(out, ids) - hf_logits(hf, ids)).abs().max().item() > 1e-3


def test_dropped_units_follow_the_dense_statistics(sources, tmp_path):
    src, _, out = upcycled(sources, "qwen2", tmp_path, n_experts=2, top_k=1, drop_ratio=1.0)
    with CheckpointSource(src) as dense, CheckpointSource(out) as moe:
        for w, p in [("w_gate", "gate_proj"), ("w_down", "down_proj")]:
            original = dense.tensor(f"layers.0.mlp.{p}.weight")
            fresh = moe.tensor(f"layers.0.mlp.{w}")  # every unit re-drawn: 2 x 6144 values
            assert abs(fresh.std().item() / original.std().item() - 1) < 0.05
            assert abs(fresh.mean().item() - original.mean().item()) < 0.05 * original.std().item()


def test_noise_makes_experts_differ_slightly(sources, tmp_path):
    src, _, out = upcycled(sources, "llama", tmp_path, noise=0.01)
    with CheckpointSource(src) as dense, CheckpointSource(out) as moe:
        original = dense.tensor("layers.0.mlp.up_proj.weight")
        experts = moe.tensor("layers.0.mlp.w_up")
        assert not torch.equal(experts[0], experts[1])
        rel = (experts - original).std() / original.std()
        assert 0.005 < rel.item() < 0.02


def test_in_memory_upcycle_leaves_the_source_alone():
    torch.manual_seed(0)
    dense = DecoderLM(ModelConfig(vocab_size=32, dim=16, n_layers=2, n_heads=2, ffn_dim=24))
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    moe = upcycle_model(dense, UpcyclePlan(n_experts=4, top_k=2))
    with torch.no_grad():
        for p in moe.parameters():
            p.add_(1.0)
    for name, p in dense.state_dict().items():
        assert torch.equal(p, before[name]), name


def test_upcycling_a_bf16_model_says_bf16_in_its_config():
    # The config says what the weights are, as growth's does: a float32 config on bf16 weights was a drift.
    from lab.config import ModelConfig
    from lab.growth import plan_growth
    from lab.derive import grow_model
    from lab.model import DecoderLM
    from lab.upcycle import UpcyclePlan
    from lab.derive import upcycle_model

    cfg = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=64)
    dense = DecoderLM(cfg).to(torch.bfloat16)
    assert dense.config.dtype == "float32"  # the source's config lags its weights
    assert upcycle_model(dense, UpcyclePlan(n_experts=4, top_k=2)).config.dtype == "bfloat16"
    assert grow_model(dense, plan_growth(cfg, dim=64, n_heads=8)).config.dtype == "bfloat16"
