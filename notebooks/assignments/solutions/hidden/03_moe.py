"""Hidden tests of assignment 03_moe: bfloat16 inputs, other k and E, a model with dense and MoE layers."""

import runpy
from pathlib import Path

import torch

from lab import moe as lab_moe
from lab.grading import check_close, question

VISIBILITY = "hidden"

# The visible tests' helpers (the hidden tests stay with the solutions, the helpers are shared).
_visible = runpy.run_path(str(Path(__file__).resolve().parents[2] / "tests" / "03_moe.py"))
router_case, check_route, expert_weights, upcycled = (
    _visible["router_case"], _visible["check_route"], _visible["expert_weights"], _visible["upcycled"])


@question(points=1)
def h1_route_bfloat16(student):
    """route: bfloat16 tokens are routed in float32"""
    x, w = router_case(9, 8, 8, seed=5)
    weights, experts = student.route(x.bfloat16(), w.bfloat16(), 2)
    assert weights.dtype == torch.float32, f"route of bfloat16 inputs should give float32 weights, got {weights.dtype}"
    expected = lab_moe.route(x.bfloat16(), w.bfloat16(), 2, "topk_softmax")
    check_close(weights, expected.weights, "route(bfloat16 x, top_k=2): weights")
    check_route(student, n=7, dim=6, n_experts=8, top_k=3, seed=6)


@question(points=2)
def h2_moe_forward_top3(student):
    """moe_forward: top-3 of 4 experts, one token"""
    x, router = router_case(1, 8, 4, seed=7)
    w_gate, w_up, w_down = expert_weights(seed=8)
    r = lab_moe.route(x, router, 3, "topk_softmax")
    check_close(student.moe_forward(x, router, w_gate, w_up, w_down, 3),
                lab_moe.reference_experts(x, r.weights, r.experts, w_gate, w_up, w_down),
                "moe_forward of one token, top-3 of 4 experts", atol=1e-5, rtol=1e-4)


@question(points=2)
def h3_expert_load_top1(student):
    """expert_load: top-1 of 4 experts, 3 MoE layers"""
    model = upcycled(seed=9, n_layers=3, n_experts=4, top_k=1)
    ids = torch.randint(0, 64, (2, 15), generator=torch.Generator().manual_seed(10))
    counts = model(ids).tokens_per_expert.float()
    check_close(student.expert_load(model, ids), counts / counts.sum(dim=-1, keepdim=True),
                "expert_load of a 3-layer top-1-of-4 MoE")
