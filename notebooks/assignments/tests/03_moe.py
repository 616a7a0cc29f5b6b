"""Visible tests of assignment 03_moe: the router and its losses against `lab.moe`, upcycling's invariant."""

import torch

from lab import moe as lab_moe
from lab.config import ModelConfig
from lab.grading import check_close, question
from lab.mlp import MLP
from lab.model import DecoderLM
from lab.upcycle import UpcyclePlan
from lab.derive import upcycle_model

# The lab's router, losses, experts and upcycling are the answers: the student's process cannot import
# them. lab.model still builds its MoE layers from lab.moe, which keeps them under private names.
OFF_LIMITS = ["lab.growth", "lab.upcycle", "lab.derive", "lab.moe.route", "lab.moe.load_balancing_loss", "lab.moe.router_z_loss",
              "lab.moe.reference_experts", "lab.moe.grouped_experts"]


def router_case(n: int = 12, dim: int = 8, n_experts: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(n_experts, dim, generator=g)


def check_route(student, n, dim, n_experts, top_k, seed=0) -> None:
    x, w = router_case(n, dim, n_experts, seed)
    what = f"route(x ({n}, {dim}), router ({n_experts}, {dim}), top_k={top_k})"
    got = student.route(x, w, top_k)
    assert isinstance(got, tuple) and len(got) == 2, f"{what} should return a tuple (weights, experts)"
    weights, experts = got
    expected = lab_moe.route(x, w, top_k, "topk_softmax")
    assert isinstance(experts, torch.Tensor), f"{what}: experts should be a tensor, got {type(experts).__name__}"
    assert tuple(experts.shape) == tuple(expected.experts.shape), (
        f"{what}: experts should have shape {tuple(expected.experts.shape)}, got {tuple(experts.shape)}")
    wrong = [t for t in range(n) if experts[t].tolist() != expected.experts[t].tolist()]
    assert not wrong, (f"{what}: wrong experts chosen for {len(wrong)} of {n} tokens; first, token {wrong[0]}: "
                       f"expected {expected.experts[wrong[0]].tolist()}, got {experts[wrong[0]].tolist()}")
    check_close(weights, expected.weights, f"{what}: weights (renormalised to sum to 1 per token)")


@question(points=3)
def q1_route(student):
    """route: top-k experts and renormalised weights"""
    check_route(student, n=12, dim=8, n_experts=6, top_k=2)
    check_route(student, n=5, dim=4, n_experts=4, top_k=1, seed=1)


def lb_case(n=16, n_experts=8, top_k=2, seed=0):
    x, w = router_case(n, 8, n_experts, seed)
    r = lab_moe.route(x, w, top_k, "topk_softmax")
    return r.probs, r.experts


@question(points=3)
def q2_load_balancing_loss(student):
    """load_balancing_loss: E * sum_e f_e P_e"""
    probs, experts = lb_case()
    counts = torch.bincount(experts.flatten(), minlength=probs.shape[-1])
    expected = lab_moe.load_balancing_loss(probs, counts)
    check_close(student.load_balancing_loss(probs, experts), expected, "load_balancing_loss of a random router")
    uniform = torch.full((8, 4), 0.25)
    balanced = torch.tensor([[0, 1], [2, 3]] * 4)
    check_close(student.load_balancing_loss(uniform, balanced), torch.tensor(1.0),
                "invariant: uniform probabilities and balanced assignments give 1")
    # An unused expert must still count in E: the loss has E from probs, not from the experts seen.
    skewed = torch.tensor([[0, 1]] * 8)
    check_close(student.load_balancing_loss(uniform, skewed), torch.tensor(1.0),
                "uniform probabilities give 1 whatever the assignments (E * sum_e f_e / E)")
    probs_grad = probs.clone().requires_grad_(True)
    loss = student.load_balancing_loss(probs_grad, experts)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad, (
        "the loss must be differentiable in probs (compute it with torch operations on probs)")


@question(points=2)
def q3_router_z_loss(student):
    """router_z_loss: mean squared logsumexp"""
    logits = torch.randn(10, 8) * 3
    check_close(student.router_z_loss(logits), lab_moe.router_z_loss(logits), "router_z_loss of random logits")
    big = torch.full((2, 4), 200.0)
    got = student.router_z_loss(big)
    check_close(got, lab_moe.router_z_loss(big), "router_z_loss of logits 200 (overflow? use torch.logsumexp)",
                rtol=1e-4)


def expert_weights(n_experts=4, ffn=6, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n_experts, ffn, dim, generator=g) * 0.3, torch.randn(n_experts, ffn, dim, generator=g) * 0.3,
            torch.randn(n_experts, dim, ffn, generator=g) * 0.3)


@question(points=4)
def q4_moe_forward(student):
    """moe_forward: weighted sum of the chosen experts' outputs"""
    x, router = router_case(10, 8, 4, seed=2)
    w_gate, w_up, w_down = expert_weights()
    for top_k in (2, 1):
        r = lab_moe.route(x, router, top_k, "topk_softmax")
        expected = lab_moe.reference_experts(x, r.weights, r.experts, w_gate, w_up, w_down)
        check_close(student.moe_forward(x, router, w_gate, w_up, w_down, top_k), expected,
                    f"moe_forward(x (10, 8), 4 experts, top_k={top_k})", atol=1e-5, rtol=1e-4)


@question(points=2)
def q5_upcycle_mlp(student):
    """upcycle_mlp: every expert a copy; the MoE equals the dense MLP"""
    torch.manual_seed(3)
    mlp = MLP(8, 12)
    stacked = student.upcycle_mlp(mlp, 4)
    assert isinstance(stacked, tuple) and len(stacked) == 3, "upcycle_mlp should return (w_gate, w_up, w_down)"
    for name, w, shape in zip(("w_gate", "w_up", "w_down"), stacked, ((4, 12, 8), (4, 12, 8), (4, 8, 12))):
        assert isinstance(w, torch.Tensor) and tuple(w.shape) == shape, (
            f"{name} should have shape {shape}, got {tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")
    dense_gate = mlp.gate_proj.weight.detach().clone()
    with torch.no_grad():
        try:
            stacked[0][1].add_(1.0)  # change expert 1 in place
        except RuntimeError:  # what .expand() gives: every expert is the same memory
            raise AssertionError("the experts share memory (.expand?): make real copies (.repeat or .clone)") from None
        assert torch.equal(stacked[0][0], dense_gate) and torch.equal(mlp.gate_proj.weight, dense_gate), (
            "changing expert 1's w_gate changed expert 0's or the dense MLP's: make real copies "
            "(.repeat or .clone)")
        stacked[0][1].sub_(1.0)
    x = torch.randn(6, 8)
    router = torch.randn(4, 8)
    r = lab_moe.route(x, router, 2, "topk_softmax")  # the lab's MoE, so that this question stands alone
    with torch.no_grad():
        check_close(lab_moe.reference_experts(x, r.weights, r.experts, *stacked), mlp(x),
                    "invariant: the upcycled MoE (top-2 of 4) equals the dense MLP", atol=1e-5, rtol=1e-4)


def upcycled(seed=0, n_layers=2, n_experts=8, top_k=2) -> DecoderLM:
    torch.manual_seed(seed)
    dense = DecoderLM(ModelConfig(vocab_size=64, dim=16, n_layers=n_layers, n_heads=2, n_kv_heads=1, ffn_dim=32,
                                  max_seq_len=32))
    return upcycle_model(dense, UpcyclePlan(n_experts=n_experts, top_k=top_k, router_init_std=0.5, seed=seed)).eval()


@question(points=2)
def q6_expert_load(student):
    """expert_load: the fraction of each layer's assignments per expert"""
    model = upcycled()
    ids = torch.randint(0, 64, (3, 20), generator=torch.Generator().manual_seed(4))
    counts = model(ids).tokens_per_expert.float()
    got = student.expert_load(model, ids)
    check_close(got, counts / counts.sum(dim=-1, keepdim=True), "expert_load of a 2-layer top-2-of-8 MoE")


@question(points=1)
def q7_imbalance(student):
    """imbalance: largest fraction times E"""
    load = torch.tensor([[0.125] * 8, [0.5, 0.5] + [0.0] * 6, [0.25, 0.25, 0.2, 0.1, 0.1, 0.1, 0.0, 0.0]])
    check_close(student.imbalance(load), torch.tensor([1.0, 4.0, 2.0]), "imbalance of 3 loads over 8 experts")
