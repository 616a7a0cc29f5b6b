"""The auxiliary losses at the values their definitions fix (tests/test_moe.py covers the rest):
load balancing E * sum_e f_e P_e is 1 at perfect balance and E/k when every token goes to the same k
experts; router z-loss is mean_t logsumexp(z_t)^2; the training loss adds them with their coefficients."""

from __future__ import annotations

import math

import pytest
import torch

from lab import DecoderLM, ModelConfig
from lab.moe import MoE, load_balancing_loss, route, router_z_loss


def moe_layer(n_experts: int, top_k: int, dim: int = 8) -> MoE:
    torch.manual_seed(0)
    layer = MoE(ModelConfig(vocab_size=8, dim=dim, n_layers=1, n_heads=2, ffn_dim=16, n_experts=n_experts,
                            top_k=top_k))
    with torch.no_grad():
        for p in (layer.w_gate, layer.w_up, layer.w_down):
            p.normal_(0, 0.1)
    return layer


@pytest.mark.parametrize("n_experts, top_k", [(4, 1), (8, 2), (6, 3)])
def test_load_balancing_is_one_at_perfect_balance(n_experts, top_k):
    """Token t puts a high logit on experts t .. t+k-1 (mod E): every expert gets the same share of the
    assignments, and by symmetry the same mean probability."""
    E, k = n_experts, top_k
    logits = torch.zeros(E, E)
    for t in range(E):
        logits[t, [(t + j) % E for j in range(k)]] = 3.0
    r = route(torch.eye(E), logits.T.contiguous(), k, "topk_softmax")  # x = one-hot, so router logits = rows
    counts = torch.bincount(r.experts.flatten(), minlength=E)
    assert counts.tolist() == [k] * E
    torch.testing.assert_close(load_balancing_loss(r.probs, counts), torch.tensor(1.0))


@pytest.mark.parametrize("n_experts, top_k", [(8, 2), (4, 1), (16, 4)])
def test_load_balancing_is_e_over_k_when_every_token_picks_the_same_experts(n_experts, top_k):
    """Through the MoE layer: a router that sends every (positive) token to experts 0..k-1 with all the
    probability on them: f = P = 1/k on those k, so E * k * (1/k)^2 = E/k."""
    layer = moe_layer(n_experts, top_k)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[:top_k] = 10.0  # logit 10 * sum(x) >= 40 on the chosen experts, 0 elsewhere
    x = torch.rand(3, 20, 8) + 0.5
    _, stats = layer(x)
    assert stats.tokens_per_expert[:top_k].tolist() == [3 * 20] * top_k
    torch.testing.assert_close(stats.load_balancing_loss, torch.tensor(n_experts / top_k), rtol=1e-5, atol=0)


def test_z_loss_on_a_hand_made_example():
    """logsumexp(0, 0) = ln 2 and logsumexp(ln 3, 0) = ln 4: mean of squares (ln2^2 + 4 ln2^2) / 2."""
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    torch.testing.assert_close(router_z_loss(logits), torch.tensor(2.5 * math.log(2.0) ** 2))
    # Shifting every logit of a token by c moves its logsumexp by c: the loss sees the scale, not just the softmax.
    torch.testing.assert_close(router_z_loss(logits + 1.0), torch.tensor(((math.log(2) + 1) ** 2 + (math.log(4) + 1) ** 2) / 2))


def test_training_loss_adds_the_auxiliary_losses_with_their_coefficients():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=32, dim=16, n_layers=2, n_heads=2, ffn_dim=24, n_experts=4, top_k=2,
                      aux_loss_coef=0.001, z_loss_coef=0.01)
    model = DecoderLM(cfg)
    ids = torch.randint(0, 32, (2, 12))
    out = model(ids, labels=ids)
    torch.testing.assert_close(out.loss, out.lm_loss + 0.001 * out.aux_loss + 0.01 * out.z_loss)
    assert out.tokens_per_expert.shape == (2, 4)
    assert out.tokens_per_expert.sum(-1).tolist() == [2 * 12 * 2] * 2
