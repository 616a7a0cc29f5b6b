"""fp32 linear layers on the CPU through oneDNN instead of MKL.

Why: PyTorch sends an fp32 `F.linear` (and the matmuls of its backward) on the CPU to MKL. On AMD CPUs
MKL runs its AVX2 code, about 200 GFLOP/s on two cores of the lab's machine; oneDNN, which the same
PyTorch build links, runs AVX-512 and measured 400-460 GFLOP/s at the lab's sizes (256-1024). `linear`
computes the three products of a linear layer with oneDNN (y = x W^T forward; dx = dy W and
dW = dy^T x backward), and `grouped_linear` those of the MoE's experts: the same products, summed in
another order, so results differ from F.linear's by fp32 rounding only (about 1e-7 relative per
product).

What it keeps: `F.linear` itself wherever the fast path is not faster or not the same computation:
other devices and dtypes, autocast (which casts inside F.linear), torch.compile (which traces F.linear),
a PyTorch without oneDNN or with it turned off (`torch.backends.mkldnn.flags(enabled=False)`), and
products under `MIN_MACS_PER_THREAD` multiply-adds per intra-op thread, where oneDNN's per-call overhead
costs more than it saves (so the tests' tiny models, and their golden losses, keep F.linear's numbers).
`enabled(False)` turns the fast path off inside a block. The LM head has its own, higher gate
(`LM_HEAD_MIN_MACS_PER_THREAD`).

The experts' loop pads each expert's rows to a multiple of `ROW_BUCKET` (`bucketed`): with row counts
that change every step, oneDNN would otherwise build a new primitive for most calls of a training step.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

# Below about this many multiply-adds (rows x in x out) per intra-op thread, oneDNN's per-call overhead
# (tens of microseconds: the primitive's lookup, the operands' descriptors, its threads' start) costs more
# than its faster kernel saves. Measured forward and backward against F.linear (MKL), median of 60
# alternating runs: on one thread 0.77x at 2^22 (2.5x slower at 2^18); on two threads 1.00-1.14x at
# 2^22, 0.89x at 2^23 and 2^24, 0.55-0.70x from 2^25 (the tiny recipes' projections are 2^24-2^26).
MIN_MACS_PER_THREAD = 1 << 22
# The LM head's gate, higher: from 2^25 per thread oneDNN took 0.55-0.70x F.linear's time (above), while
# between 2^22 and 2^25 it gained about a tenth or lost, and the LM head's input gradient, a sum over the whole
# vocabulary, rounds visibly differently (the golden losses of tests/golden_losses.json, 2^24 multiply-adds
# on one thread, moved beyond their 1e-6). So the LM head takes oneDNN only where the gain is large.
LM_HEAD_MIN_MACS_PER_THREAD = 1 << 25
# The same for the experts' loop (`grouped_linear`, `bucketed`), per group of the mean size (rows / E x
# in x out), against the grouped matmul (MKL's), the SwiGLU experts forward and backward with row counts
# that change from step to step: on one thread 1.08x at 2^21, 0.89x at 2^22, 0.77x at 2^23.5; on two
# threads 1.2-1.5x at 2^22, 1.02-1.06x at 2^23.5 (recipes/tiny-moe.yaml), 0.89-1.02x at 2^24.5, 0.73x
# at 2^26 (the model benchmark's MoE).
MIN_GROUP_MACS_PER_THREAD = 1 << 23
# oneDNN builds (and caches, 1024 at most) one primitive per distinct shape: building one costs 0.5-0.9 ms,
# 4-8 times the product itself at the experts' sizes of recipes/tiny-moe.yaml. The experts' row counts
# change every step, so the MoE pads each group to a multiple of ROW_BUCKET rows (`bucketed`): a few
# dozen shapes per layer, built once, at the cost of ROW_BUCKET / 2 rows of padding per expert on average.
ROW_BUCKET = 32

_state = {"enabled": True}


def _onednn_linear_op():
    try:
        return torch.ops.mkldnn._linear_pointwise.default if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):  # a build without oneDNN registers no such operator
        return None


_OP = _onednn_linear_op()


def mm_bt(a: torch.Tensor, b_t: torch.Tensor) -> torch.Tensor:
    """a @ b_t.T with oneDNN, for 2-D fp32 operands. `a` is copied to row-major first (by the operator);
    `b_t` is read in place when it is row-major or a transposed row-major tensor, and copied otherwise:
    oneDNN runs any other strides (a slice of wider rows, a broadcast) in its reference kernel, hundreds
    of times slower."""
    if not (b_t.is_contiguous() or b_t.t().is_contiguous()):
        b_t = b_t.contiguous()
    return _OP(a, b_t, None, "none", [], "")


def weight_grad(x: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    """dW = dy^T x (O, I) for x (N, I) and dy (N, O), computed in the order that copies less: as
    (x^T dy)^T when the output is wide (copies x^T, and the caller the (I, O) result: a transposed view
    is returned), else directly (copies dy^T)."""
    (N, I), O = x.shape, grad_y.shape[1]
    if N * I + I * O < N * O:
        return mm_bt(x.t(), grad_y.t()).t()
    return mm_bt(grad_y.t(), x.t())


@contextlib.contextmanager
def enabled(on: bool):
    """Turn the oneDNN path on or off inside the block (F.linear everywhere when off)."""
    before = _state["enabled"]
    _state["enabled"] = on
    try:
        yield
    finally:
        _state["enabled"] = before


def onednn_ready(*tensors: torch.Tensor) -> bool:
    """Whether products of these tensors may go through oneDNN: all fp32 on the CPU, oneDNN built and on,
    the fast path not turned off, and neither autocast (which F.linear obeys) nor torch.compile (which
    traces F.linear) at work."""
    if _OP is None or not _state["enabled"] or not torch.backends.mkldnn.enabled:
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    return not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()


def uses_onednn(x: torch.Tensor, weight: torch.Tensor, min_macs_per_thread: int = MIN_MACS_PER_THREAD) -> bool:
    """Whether `linear(x, weight)` takes the oneDNN path: `onednn_ready`, and at least
    `min_macs_per_thread` multiply-adds per intra-op thread."""
    if x.dim() < 2 or weight.dim() != 2 or not onednn_ready(x, weight):
        return False
    rows = x.numel() // max(x.shape[-1], 1)
    return rows * weight.shape[0] * weight.shape[1] >= min_macs_per_thread * torch.get_num_threads()


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b, its gradients computed with oneDNN too."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        x_2d = x.reshape(-1, x.shape[-1])
        y_2d = mm_bt(x_2d, weight)
        if bias is not None:
            y_2d = y_2d.add_(bias)
        return y_2d.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_2d = grad_y.reshape(-1, grad_y.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = mm_bt(grad_2d, weight.t()).view(x.shape)  # dy W
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(x.reshape(-1, x.shape[-1]), grad_2d).contiguous()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_2d.sum(0)
        return grad_x, grad_w, grad_b


class _OneDNNGroupedLinear(torch.autograd.Function):
    """Rows x (N, I) in groups of `sizes` rows, group e times w[e].T (w stacked (E, O, I)), with oneDNN.

    One function for the whole group, not one `linear` per group: the gradient of each w[e] is written
    into its slot of one (E, O, I) tensor, where autograd would add E full-size tensors, each zero but
    for its slot.
    """

    @staticmethod
    def forward(ctx, x, w, sizes):
        ctx.save_for_backward(x, w)
        ctx.sizes = sizes
        return torch.cat([mm_bt(x_e, w[e]) for e, x_e in enumerate(x.split(sizes))])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, w = ctx.saved_tensors
        grad_x = grad_w = None
        pairs = list(enumerate(zip(x.split(ctx.sizes), grad_y.split(ctx.sizes))))
        if ctx.needs_input_grad[0]:
            grad_x = torch.cat([mm_bt(g_e, w[e].t()) for e, (_, g_e) in pairs])
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(w)
            for e, (x_e, g_e) in pairs:
                grad_w[e] = weight_grad(x_e, g_e) if x_e.shape[0] else 0.0
        return grad_x, grad_w, None


def grouped_uses_onednn(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the experts' products of rows x (N, I) and stacked weights w (E, O, I) go through oneDNN:
    `onednn_ready`, and at least MIN_GROUP_MACS_PER_THREAD multiply-adds per intra-op thread for a group
    of the mean size."""
    if x.dim() != 2 or w.dim() != 3 or not onednn_ready(x, w):
        return False
    E, O, I = w.shape
    return x.shape[0] // max(E, 1) * O * I >= MIN_GROUP_MACS_PER_THREAD * torch.get_num_threads()


def onednn_grouped_linear(x: torch.Tensor, w: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """x (N, I) in consecutive groups of `sizes` rows, group e times w[e].T (w stacked (E, O, I)); (N, O),
    through oneDNN whatever the sizes (the caller has checked `grouped_uses_onednn`). Sizes that are
    multiples of ROW_BUCKET (`bucketed`) keep the number of distinct oneDNN primitives small."""
    return _OneDNNGroupedLinear.apply(x, w, sizes)


def grouped_linear(x: torch.Tensor, w: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """x (N, I) in consecutive groups of `sizes` rows, group e times w[e].T (w stacked (E, O, I)); (N, O).

    Through oneDNN where `grouped_uses_onednn` says so, else a loop of F.linear."""
    if grouped_uses_onednn(x, w):
        return _OneDNNGroupedLinear.apply(x, w, sizes)
    return torch.cat([F.linear(x_e, w[e]) for e, x_e in enumerate(x.split(sizes))])


def bucketed(sizes: list[int], device: torch.device | str = "cpu") -> tuple[list[int], torch.Tensor]:
    """The groups of `sizes` rows, each padded to a multiple of ROW_BUCKET rows: (padded sizes, positions).

    positions (sum(sizes),) int64: where each row of the unpadded layout sits in the padded one (a
    group's rows first, in order, its padding after). Zero padding rows stay zero through products
    without bias and through SwiGLU (silu(0) * 0 = 0), forward and backward, so that the weight
    gradients, sums over the rows, are the unpadded ones."""
    padded = [-(-n // ROW_BUCKET) * ROW_BUCKET for n in sizes]
    counts = torch.tensor(sizes, dtype=torch.int64)
    shift = torch.tensor(padded, dtype=torch.int64).cumsum(0) - counts.cumsum(0)  # padding before each group's end
    shift = torch.cat([shift.new_zeros(1), shift[:-1]])  # ... before each group's start
    positions = torch.arange(int(counts.sum())) + shift.repeat_interleave(counts)
    return padded, positions.to(device)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           min_macs_per_thread: int = MIN_MACS_PER_THREAD) -> torch.Tensor:
    """F.linear(x, weight, bias), through oneDNN where `uses_onednn` says so."""
    if uses_onednn(x, weight, min_macs_per_thread) and (bias is None or onednn_ready(bias)):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) whose forward is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
