"""Causal self-attention on the CPU in fp32, one block of queries at a time, through oneDNN's matmuls.

Why: at the lab's lengths (512-2048 tokens) PyTorch's CPU flash attention runs its matmuls through MKL,
at half oneDNN's speed on the lab's machine (see `lab.fast_linear`); its backward alone measured 92 ms of
a 455 ms MoE training step. Here each block of `BLOCK` queries meets only the keys up to its own end (the blocks
above the diagonal are skipped, as flash attention skips them), and its products (scores and output
forward; the probabilities' gradient and those of q, k and v backward) go through oneDNN.

What it computes is softmax(q k^T / sqrt(hd) + causal mask) v, as written: a full softmax per row
and softmax's own backward (`torch._softmax_backward_data`). q is scaled before its product, which
saves a pass over the scores (SDPA's math path scales q and k before theirs too); for a head size that
is a power of 4, such as 64, the scale is a power of 2 and exact. Results differ from flash attention's
by fp32 rounding only (the order of the sums; flash rescales partial sums as it goes). Memory: the
probabilities of the causal half, B H T^2 / 2 floats, stay for the backward pass (SDPA's math path keeps
the full square).

`applies` says where it runs: fp32 on the CPU with oneDNN on (`lab.fast_linear.onednn_ready`), a causal
attention without a mask tensor, at least `MIN_TOKENS` tokens (below, flash attention's single
parallel loop is faster than the per-block calls), at most `MAX_THREADS` intra-op threads, and, when a
backward pass will follow, at most `MAX_SAVED` saved probabilities per call (beyond, flash attention's
memory, linear in T, wins).

Measured on the lab's machine (2 cores, fp32, 2048 tokens, 4 query heads over 2 key/value heads of
64; forward+backward of one layer, medians of 7-15 in turns): on one thread flash attention 121-123 ms,
this attention with blocks of 128 queries 64 and 84 ms (two runs), with blocks of 256 105-115 ms: a
block's scores, (256 * 2 rows, 2048) floats, no longer fit the 2 MiB L2 cache, while 64-128 rows per
key/value head do. On two threads, in four runs flash attention 61-68 ms and blocks of 128 43-52 ms (in a
fifth, on a busier machine, 103 and 72). In the benchmark's MoE training step (`lab.bench.model_speed`'s
sizes, timed in turns in one process) the step took 0.70-0.73x transformers' in three runs against
0.78-0.80x with flash attention in the two that kept its figure, and 0.78x against 0.79x while another
process of equal priority kept both cores busy (every candidate then 2.5 times slower). More than two
threads are not measured, so flash attention keeps them.
"""

from __future__ import annotations

import math

import torch

from lab import fast_linear

# Queries per block: smaller skips more of the diagonal blocks' masked half and keeps a block's scores in
# the L2 cache (128 queries x 2 heads x 2048 keys of fp32 is 2 MiB); larger makes fewer calls.
BLOCK = 128
MIN_TOKENS = 512
# The thread counts measured (one and two); more threads keep flash attention, whose one parallel loop
# per call may well scale better than ~700 per-block calls a step.
MAX_THREADS = 2
MAX_SAVED = 1 << 26  # probabilities kept for the backward pass of one call (256 MB of fp32)


def applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether `causal_attention(q, k, v)` is the faster way for these (B, H, T, hd) tensors."""
    B, H, T, _ = q.shape
    if T < MIN_TOKENS or k.shape[2] != T or torch.get_num_threads() > MAX_THREADS or not fast_linear.onednn_ready(q, k, v):
        return False
    saves = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    return not saves or B * H * T * (T + BLOCK) // 2 <= MAX_SAVED


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (B, H, T, hd) over k, v (B, K, T, hd); H a multiple of K (grouped-query
    attention: query head h reads key/value head h // (H // K), as SDPA's enable_gqa). Returns (B, H, T, hd)."""
    return _CausalAttention.apply(q, k, v)


def _blocks(T: int, block: int):
    for start in range(0, T, block):
        yield start, min(start + block, T)


class _CausalAttention(torch.autograd.Function):
    """The G = H // K query heads that share a key/value head are rows of one product: one call per
    (batch, key/value head, block), on rows ordered (position, head), so that a block of positions is a
    contiguous (rows * G, hd) slice of q laid out (B, K, T, G, hd). The output and the gradients of q, k
    and v are laid out (B, T, heads, hd), as the projections make and read them."""

    @staticmethod
    def forward(ctx, q, k, v):
        B, H, T, hd = q.shape
        K, block = k.shape[1], BLOCK
        G = H // K
        scale = 1.0 / math.sqrt(hd)
        q_s = torch.empty(B, K, T, G, hd, dtype=q.dtype, device=q.device)
        torch.mul(q.view(B, K, G, T, hd).transpose(2, 3), scale, out=q_s)  # scaled before the product
        k, v = k.contiguous(), v.contiguous()  # row-major (T, hd) per head, as oneDNN reads them in place
        # position r of a block may not see position c > r of the block; each position is G rows
        above_diagonal = torch.ones(block, block, dtype=torch.bool, device=q.device).triu_(1).repeat_interleave(G, 0)
        out = torch.empty(B, T, K, G, hd, dtype=q.dtype, device=q.device)
        probs = []  # per (batch, key/value head, block): (rows * G, end) probabilities
        for b in range(B):
            for kv in range(K):
                k_TD, v_TD = k[b, kv], v[b, kv]
                for start, end in _blocks(T, block):
                    rows = end - start
                    scores = fast_linear.mm_bt(q_s[b, kv, start:end].view(rows * G, hd), k_TD[:end])
                    scores[:, start:].masked_fill_(above_diagonal[: rows * G, :rows], float("-inf"))
                    p = torch.softmax(scores, dim=-1)
                    out[b, start:end, kv] = fast_linear.mm_bt(p, v_TD[:end].t()).view(rows, G, hd)
                    probs.append(p)
        ctx.save_for_backward(q_s, k, v, *probs)
        ctx.scale, ctx.block = scale, block
        return out.view(B, T, H, hd).transpose(1, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q_s, k, v, *probs = ctx.saved_tensors
        B, K, T, G, hd = q_s.shape
        grad_o = torch.empty_like(q_s)  # (B, K, T, G, hd), as q_s
        grad_o.copy_(grad_out.view(B, K, G, T, hd).transpose(2, 3))
        grad_q = torch.empty(B, T, K, G, hd, dtype=q_s.dtype, device=q_s.device)
        grad_k = torch.zeros(B, T, K, hd, dtype=k.dtype, device=k.device)
        grad_v = torch.zeros_like(grad_k)
        blocks = iter(probs)
        for b in range(B):
            for kv in range(K):
                k_TD, v_TD = k[b, kv], v[b, kv]
                for start, end in _blocks(T, ctx.block):
                    p, rows = next(blocks), end - start
                    g = grad_o[b, kv, start:end].view(rows * G, hd)
                    grad_p = fast_linear.mm_bt(g, v_TD[:end])  # dP = dO V^T
                    grad_scores = torch._softmax_backward_data(grad_p, p, -1, p.dtype)  # dS
                    grad_q[b, start:end, kv] = fast_linear.mm_bt(grad_scores, k_TD[:end].t()).view(rows, G, hd)
                    q_2d = q_s[b, kv, start:end].view(rows * G, hd)
                    grad_k[b, :end, kv] += fast_linear.weight_grad(q_2d, grad_scores)  # dS^T (Q scale), over the G heads
                    grad_v[b, :end, kv] += fast_linear.weight_grad(g, p)  # P^T dO, over the G heads
        grad_q = grad_q.mul_(ctx.scale).view(B, T, K * G, hd).transpose(1, 2)
        return grad_q, grad_k.transpose(1, 2), grad_v.transpose(1, 2)
