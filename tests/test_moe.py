"""The MoE layer: grouped dispatch equals the reference loop; upcycling's invariant; auxiliary losses."""

import math

import pytest
import torch

from lab import ModelConfig
from lab.mlp import MLP
from lab.moe import MoE, load_balancing_loss, route, router_z_loss


def make_moe(seed=0, **fields) -> MoE:
    cfg = ModelConfig(**{"vocab_size": 8, "dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 48,
                         "n_experts": 4, "top_k": 2, **fields})
    torch.manual_seed(seed)
    moe = MoE(cfg)
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.2)
    return moe


def run(moe, x, dispatch):
    moe.dispatch = dispatch
    moe.zero_grad()
    x = x.clone().requires_grad_()
    y, stats = moe(x)
    # A loss that touches the output, the load-balancing loss and the z-loss, so every path is checked.
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    ((y * probe).sum() + stats.load_balancing_loss + stats.z_loss).backward()
    grads = {name: p.grad.clone() for name, p in moe.named_parameters()}
    return y.detach(), x.grad, grads, stats


@pytest.mark.parametrize("fields", [
    dict(),  # dims aligned for torch._grouped_mm
    dict(dim=30, ffn_dim=46, n_heads=3),  # unaligned: the loop over contiguous slices
    dict(routing="softmax_topk"),
    dict(top_k=1, n_experts=8),
    dict(shared_expert_ffn_dim=24),
])
def test_grouped_dispatch_equals_reference_forward_and_backward(fields):
    moe = make_moe(**fields)
    x = torch.randn(3, 11, moe.w_gate.shape[-1], generator=torch.Generator().manual_seed(1))
    y_ref, dx_ref, g_ref, s_ref = run(moe, x, "reference")
    y, dx, g, s = run(moe, x, "grouped")
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], msg=name)
    assert torch.equal(s.tokens_per_expert, s_ref.tokens_per_expert)


def test_expert_that_receives_no_token():
    moe = make_moe()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[:2] = 5.0  # positive inputs always pick experts 0 and 1
    x = torch.rand(2, 9, 32) + 0.1
    y_ref, *_ = run(moe, x, "reference")
    y, _, _, stats = run(moe, x, "grouped")
    assert (stats.tokens_per_expert == 0).any()
    torch.testing.assert_close(y, y_ref)


def dense_and_copies(n_experts, top_k, routing="topk_softmax"):
    moe = make_moe(n_experts=n_experts, top_k=top_k, routing=routing)
    mlp = MLP(32, 48)
    with torch.no_grad():
        for e in range(n_experts):
            moe.w_gate[e] = mlp.gate_proj.weight
            moe.w_up[e] = mlp.up_proj.weight
            moe.w_down[e] = mlp.down_proj.weight
    return moe, mlp


@pytest.mark.parametrize("dispatch", ["grouped", "reference"])
def test_one_expert_equals_the_dense_mlp(dispatch):
    moe, mlp = dense_and_copies(n_experts=1, top_k=1)
    moe.dispatch = dispatch
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(moe(x)[0], mlp(x))


@pytest.mark.parametrize("dispatch", ["grouped", "reference"])
def test_identical_experts_equal_the_dense_mlp(dispatch):
    """Sparse upcycling's invariant: with renormalised top-k weights the router does not matter."""
    moe, mlp = dense_and_copies(n_experts=8, top_k=2)
    moe.dispatch = dispatch
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(moe(x)[0], mlp(x))


def test_softmax_topk_does_not_preserve_the_dense_mlp():
    moe, mlp = dense_and_copies(n_experts=8, top_k=2, routing="softmax_topk")
    x = torch.randn(2, 10, 32)
    assert not torch.allclose(moe(x)[0], mlp(x), atol=1e-3)


def test_routing_weights():
    x = torch.randn(50, 32)
    w = torch.randn(6, 32)
    renorm = route(x, w, 2, "topk_softmax")
    plain = route(x, w, 2, "softmax_topk")
    torch.testing.assert_close(renorm.weights.sum(-1), torch.ones(50))
    assert (plain.weights.sum(-1) < 1).all()
    assert torch.equal(renorm.experts, plain.experts)


def test_load_balancing_loss_is_one_at_perfect_balance_and_grows_with_imbalance():
    E, N = 4, 64
    uniform = torch.full((N, E), 1 / E)
    assert load_balancing_loss(uniform, torch.full((E,), N * 2 // E)).item() == pytest.approx(1.0)
    skewed = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).repeat(N, 1)
    assert load_balancing_loss(skewed, torch.tensor([N, 0, 0, 0])).item() == pytest.approx(E * 0.97)


def test_router_z_loss_formula():
    E = 8
    assert router_z_loss(torch.zeros(5, E)).item() == pytest.approx(math.log(E) ** 2)
    logits = torch.randn(7, E)
    assert router_z_loss(logits).item() == pytest.approx((torch.logsumexp(logits, -1) ** 2).mean().item())


def test_stats_count_every_assignment():
    moe = make_moe(n_experts=8, top_k=2)
    _, stats = moe(torch.randn(3, 10, 32))
    assert stats.tokens_per_expert.sum().item() == 3 * 10 * 2
    assert 0 < stats.router_entropy.item() <= math.log(8)


def test_both_grouped_paths_are_exercised():
    """The aligned case above runs torch._grouped_mm; the unaligned one the slice loop."""
    from lab.moe import _grouped_mm_supported

    assert _grouped_mm_supported(torch.zeros(4, 32), torch.zeros(4, 48, 32)) == hasattr(torch, "_grouped_mm")
    assert not _grouped_mm_supported(torch.zeros(4, 30), torch.zeros(4, 46, 30))
