"""FLOPs per token against the model's own parameter count, MFU, and the paper's Table 6 savings."""

import pytest
import torch

from lab import DecoderLM, ModelConfig
from lab.flops import (Phase, active_parameters, flops_per_token, matmul_parameters, mfu, savings,
                       total_parameters)
from lab.paper import TABLE6, TABLE6_SCRATCH

CONFIGS = {
    "dense": dict(qkv_bias=True),
    "tied-mha": dict(qkv_bias=False, tie_embeddings=True, n_kv_heads=4),
    "moe": dict(n_experts=8, top_k=2, moe_ffn_dim=24),
    "qwen2-moe": dict(n_experts=4, top_k=1, shared_expert_ffn_dim=40, moe_layers=(1,), routing="softmax_topk"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_active_parameters_match_the_model(name):
    cfg = ModelConfig(**{**dict(vocab_size=100, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48), **CONFIGS[name]})
    with torch.device("meta"):
        model = DecoderLM(cfg)
    # The model's active count without embeddings, plus the LM head's matmul (counted even when tied).
    expected = model.num_parameters(active=True, embeddings=False) + cfg.vocab_size * cfg.dim
    assert matmul_parameters(cfg) == expected
    # The counts a model card gives, from the weights themselves.
    assert total_parameters(cfg) == model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert active_parameters(cfg) == model.num_parameters(active=True)
    T = 64
    assert flops_per_token(cfg, T) == 6 * expected + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * T


def test_moe_counts_only_active_experts():
    dense = ModelConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, ffn_dim=48)
    moe = dense.replace(n_experts=8, top_k=2, moe_ffn_dim=48, moe_layers=None)
    router = dense.n_layers * dense.dim * 8
    # Two active copies of the dense MLP per layer, plus the router.
    mlp = 3 * dense.dim * dense.ffn_dim * dense.n_layers
    assert matmul_parameters(moe) - matmul_parameters(dense) == mlp + router
    assert active_parameters(moe) - active_parameters(dense) == mlp + router


def test_mfu():
    assert mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        mfu(1.0, 1.0, 0.0)


def test_table6_savings_reproduce_the_paper():
    time, compute = savings(TABLE6, TABLE6_SCRATCH)
    assert round(time, 2) == 4.12
    assert round(compute, 2) == 3.35


def test_a_slower_cluster_takes_longer_and_spends_the_same_compute():
    # The consistent reading of "the preparation ran on a cluster half as fast": at the same utilisation its
    # tokens per day halve, so the time savings fall and the compute (days x the cluster's rate) stays.
    prep = TABLE6[0]
    slow = prep.on_cluster(tflops_per_device=prep.tflops_per_device / 2)
    assert slow.tokens_per_day_b == pytest.approx(prep.tokens_per_day_b / 2)
    assert slow.utilisation == pytest.approx(prep.utilisation) and 0 < prep.utilisation < 1
    assert slow.days * slow.tflops == pytest.approx(prep.days * prep.tflops)
    time, compute = savings([slow, *TABLE6[1:]], TABLE6_SCRATCH)
    assert time < savings(TABLE6, TABLE6_SCRATCH)[0] and compute == pytest.approx(savings(TABLE6, TABLE6_SCRATCH)[1])
    assert prep.on_cluster(devices=2 * prep.devices).tokens_per_day_b == pytest.approx(2 * prep.tokens_per_day_b)


def test_savings_are_one_against_itself():
    phase = Phase("x", 8, 100.0, 1, 10, 2)
    assert savings([phase], phase) == pytest.approx((1.0, 1.0))
    assert savings([phase, phase], phase) == pytest.approx((0.5, 0.5))
