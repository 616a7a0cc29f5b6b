"""The MoE dispatch ablation: four ways to run the same routed experts, forward+backward, timed in turns.

- masks: for each expert, a mask of the tokens that chose it, gather, MLP, weighted scatter
  (`lab.moe.reference_experts`, the readable version);
- sort+loop: sort the N * top_k assignments by expert once, then one matmul per contiguous slice;
- sort+grouped_mm: the same sorted rows, one `torch._grouped_mm` per projection (the lab's default
  where the build has it);
- all experts: every expert on every token, combined with the (mostly zero) routing weights: E / top_k
  times the FLOPs, no gather or scatter (what a dense einsum would do).

All four compute the same layer output (the test checks it with `torch.testing.assert_close`); the
router is shared and outside the timing difference. Shapes follow `lab.bench.model_speed`'s MoE.
"""

from __future__ import annotations

import statistics
from functools import partial

import torch
import torch.nn.functional as F

from lab.bench.model_speed import time_in_turns
from lab.moe import grouped_experts, reference_experts, route

# The MoE layer of lab.bench.model_speed.MOE_SIZE: D 256, F 512, 8 experts, top-2, 2048 tokens.
SIZE = dict(tokens=2048, dim=256, ffn_dim=512, n_experts=8, top_k=2)
QUICK_SIZE = dict(tokens=64, dim=32, ffn_dim=64, n_experts=4, top_k=2)


def all_experts(x, weights, experts, w_gate, w_up, w_down) -> torch.Tensor:
    """Every expert on every token (N, E, D), combined by the routing weights scattered to (N, E)."""
    dense = torch.zeros(x.shape[0], w_gate.shape[0], dtype=weights.dtype, device=x.device)
    dense = dense.scatter(1, experts, weights).to(x.dtype)  # (N, E), top_k non-zeros per row
    h = F.silu(torch.einsum("nd,efd->nef", x, w_gate)) * torch.einsum("nd,efd->nef", x, w_up)  # (N, E, F)
    y = torch.einsum("nef,edf->ned", h, w_down)  # (N, E, D)
    return torch.einsum("ned,ne->nd", y, dense)


DISPATCHES = {
    "masks": reference_experts,
    "sort+loop": partial(grouped_experts, kernel="loop"),
    "sort+grouped_mm": partial(grouped_experts, kernel="grouped_mm"),
    "all experts": all_experts,
}


def make_layer(tokens: int, dim: int, ffn_dim: int, n_experts: int, top_k: int, seed: int = 0) -> dict:
    """Random inputs and expert weights (requiring gradients) of one MoE layer, and a router."""
    g = torch.Generator().manual_seed(seed)

    def param(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).requires_grad_()

    return {"x": torch.randn(tokens, dim, generator=g).requires_grad_(), "router": param(n_experts, dim),
            "w_gate": param(n_experts, ffn_dim, dim), "w_up": param(n_experts, ffn_dim, dim),
            "w_down": param(n_experts, dim, ffn_dim), "top_k": top_k}


def forward(layer: dict, dispatch: str) -> torch.Tensor:
    r = route(layer["x"], layer["router"], layer["top_k"], "topk_softmax")
    return DISPATCHES[dispatch](layer["x"], r.weights, r.experts, layer["w_gate"], layer["w_up"], layer["w_down"])


def _step(layer: dict, dispatch: str) -> None:
    forward(layer, dispatch).square().mean().backward()
    for key in ("x", "router", "w_gate", "w_up", "w_down"):
        layer[key].grad = None


def available() -> list[str]:
    """The dispatches this build runs (sort+grouped_mm needs `torch._grouped_mm`)."""
    return [name for name in DISPATCHES if name != "sort+grouped_mm" or hasattr(torch, "_grouped_mm")]


def run(repeats: int = 7, warmup: int = 2, threads: int = 2, quick: bool = False) -> dict:
    """Forward+backward of one MoE layer per dispatch; medians (ms) and ratios to the fastest."""
    torch.set_num_threads(threads)
    size = QUICK_SIZE if quick else SIZE
    layer = make_layer(**size)
    names = available()
    # Every dispatch is kept (too_slow=inf): the ablation wants all four figures, slow ones included.
    times, _ = time_in_turns({n: partial(_step, layer, n) for n in names}, repeats, warmup, too_slow=float("inf"))
    medians = {n: statistics.median(t) * 1e3 for n, t in times.items()}
    fastest = min(medians.values())
    return {"size": size, "threads": threads, "repeats": repeats, "dtype": "float32", "torch": torch.__version__,
            "median_ms": medians, "times_ms": {n: [x * 1e3 for x in t] for n, t in times.items()},
            "over_fastest": {n: m / fastest for n, m in medians.items()}}


def format_report(r: dict) -> str:
    s = r["size"]
    lines = [f"MoE layer dispatch, forward+backward, fp32, {s['tokens']} tokens, D {s['dim']}, F {s['ffn_dim']}, "
             f"{s['n_experts']} experts top-{s['top_k']}, {r['threads']} threads, median of {r['repeats']}", ""]
    lines.append(f"{'dispatch':<18} {'median ms':>10} {'/ fastest':>10}")
    for name, ms in r["median_ms"].items():
        lines.append(f"{name:<18} {ms:>10.2f} {r['over_fastest'][name]:>10.2f}")
    return "\n".join(lines)
