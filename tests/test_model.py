"""The decoder: config validation, causality, the KV cache, losses, generation."""

import pytest
import torch
import torch.nn.functional as F

import lab
from lab import DecoderLM, ModelConfig

SMALL = dict(vocab_size=50, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48)


def model(seed=0, **fields):
    torch.manual_seed(seed)
    return DecoderLM(ModelConfig(**{**SMALL, **fields})).eval()


@pytest.mark.parametrize("fields, message", [
    (dict(n_kv_heads=3), r"ModelConfig\.n_kv_heads=3: must divide n_heads=4"),
    (dict(dim=0), r"ModelConfig\.dim=0: must be a positive integer"),
    (dict(head_dim=7), r"ModelConfig\.head_dim=7: must be even"),
    (dict(n_experts=4, top_k=5), r"ModelConfig\.top_k=5: must be in \[1, n_experts=4\]"),
    (dict(n_experts=4, routing="sinkhorn"), r"ModelConfig\.routing='sinkhorn': must be one of"),
    (dict(n_experts=4, moe_layers=(0, 7)), r"ModelConfig\.moe_layers=\(0, 7\): every index must be in"),
    (dict(moe_layers=(0,)), r"ModelConfig\.moe_layers=\(0,\): must be empty for a dense model"),
    (dict(dtype="float64"), r"ModelConfig\.dtype='float64': must be one of"),
])
def test_impossible_config_names_field_and_rule(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**SMALL, **fields})


def test_unknown_field_from_dict():
    with pytest.raises(ValueError, match="unknown field 'hidden_size'"):
        ModelConfig.from_dict({"hidden_size": 64})


def test_derived_fields():
    cfg = ModelConfig(**{**SMALL, "n_kv_heads": None, "n_experts": 4})
    assert (cfg.n_kv_heads, cfg.head_dim, cfg.moe_ffn_dim, cfg.moe_layers) == (4, 8, 48, (0, 1))


@pytest.mark.parametrize("fields", [dict(), dict(n_experts=4, top_k=2), dict(sliding_window=4)])
def test_causal(fields):
    m = model(**fields)
    ids = torch.randint(0, 50, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 50
    with torch.no_grad():
        torch.testing.assert_close(m(ids).logits[:, :8], m(changed).logits[:, :8])
        assert not torch.allclose(m(ids).logits[:, 8:], m(changed).logits[:, 8:])


@pytest.mark.parametrize("fields", [dict(), dict(n_experts=4, top_k=2), dict(sliding_window=5),
                                    dict(n_kv_heads=4, qkv_bias=False)])
def test_kv_cache_decoding_equals_full_forward(fields):
    m = model(**fields)
    ids = torch.randint(0, 50, (2, 16))
    with torch.no_grad():
        full = m(ids).logits
        cache = m.new_cache(2, 16)
        pieces = [m(ids[:, :6], cache=cache).logits, m(ids[:, 6:9], cache=cache).logits]
        pieces += [m(ids[:, t:t + 1], cache=cache).logits for t in range(9, 16)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_loss_is_shifted_cross_entropy_plus_weighted_aux_losses():
    m = model(n_experts=4, top_k=2, aux_loss_coef=0.5, z_loss_coef=0.25)
    ids = torch.randint(0, 50, (2, 10))
    labels = ids.clone()
    labels[0, :3] = -100
    out = m(ids, labels=labels)
    expected_lm = F.cross_entropy(out.logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.lm_loss, expected_lm)
    torch.testing.assert_close(out.loss, expected_lm + 0.5 * out.aux_loss + 0.25 * out.z_loss)
    assert out.tokens_per_expert.shape == (2, 4) and out.tokens_per_expert.sum() == 2 * 2 * 10 * 2
    dense = model()(ids, labels=labels)
    assert dense.aux_loss is None and torch.equal(dense.loss, dense.lm_loss)


def test_tied_embeddings_share_one_tensor():
    m = model(tie_embeddings=True)
    assert m.lm_head is None and m.output_weight is m.tok_embeddings.weight
    assert m.num_parameters() == model().num_parameters() - 50 * 32


def test_active_parameters_count_top_k_experts():
    m = model(n_experts=4, top_k=1)
    expert_params = 2 * 3 * 4 * 48 * 32
    assert m.num_parameters() - m.num_parameters(active=True) == expert_params * 3 // 4


def test_bfloat16_model_runs():
    m = model(dtype="bfloat16")
    assert m.tok_embeddings.weight.dtype == torch.bfloat16
    assert m(torch.randint(0, 50, (1, 5))).logits.dtype == torch.bfloat16


def test_generation_greedy_sampling_and_eos():
    m = model(n_experts=4, top_k=2)
    prompt = torch.randint(0, 50, (2, 4))
    greedy = lab.generate(m, prompt, 10)
    assert greedy.shape == (2, 14) and torch.equal(greedy[:, :4], prompt)
    # Greedy by hand, without the cache: each step takes the argmax of a full forward.
    by_hand = prompt
    for _ in range(10):
        by_hand = torch.cat([by_hand, m(by_hand).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(greedy, by_hand)
    # A tiny nucleus keeps only the top token: sampling then equals greedy decoding.
    assert torch.equal(lab.generate(m, prompt, 10, temperature=1.0, top_p=1e-6), greedy)
    s1 = lab.generate(m, prompt, 10, temperature=1.5, generator=torch.Generator().manual_seed(0))
    s2 = lab.generate(m, prompt, 10, temperature=1.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and not torch.equal(s1, greedy)
    eos = int(greedy[0, 6])
    stopped = lab.generate(m, prompt[:1], 10, eos_token_id=eos)
    assert stopped[0, -1].item() == eos and stopped.shape[1] <= 7


def test_generation_rejects_bad_arguments():
    m = model()
    with pytest.raises(ValueError, match="top_p"):
        lab.generate(m, torch.zeros(1, 3, dtype=torch.long), 2, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="input_ids"):
        lab.generate(m, torch.zeros(3, dtype=torch.long), 2)
