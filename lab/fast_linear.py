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
products under `MIN_MACS` multiply-adds, where oneDNN's per-call overhead costs more than it saves (so
the tests' tiny models, and their golden losses, keep F.linear's numbers). `enabled(False)` turns the
fast path off inside a block.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

# Below about this many multiply-adds (rows x in x out) oneDNN's per-call overhead (tens of microseconds:
# the primitive's lookup, the operands' descriptors) costs more than its faster kernel saves: measured on
# one thread, forward and backward, 2.5x slower than F.linear at 2^18, 1.4x faster at 2^22.
MIN_MACS = 1 << 22

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


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `linear(x, weight)` takes the oneDNN path: `onednn_ready`, and at least MIN_MACS."""
    if x.dim() < 2 or weight.dim() != 2 or not onednn_ready(x, weight):
        return False
    rows = x.numel() // max(x.shape[-1], 1)
    return rows * weight.shape[0] * weight.shape[1] >= MIN_MACS


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


def grouped_linear(x: torch.Tensor, w: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """x (N, I) in consecutive groups of `sizes` rows, group e times w[e].T (w stacked (E, O, I)); (N, O).

    Through oneDNN where `uses_onednn` says so for a group of the mean size, else a loop of F.linear."""
    if uses_onednn(x[: max(x.shape[0] // max(len(sizes), 1), 1)], w[0]):  # the mean group decides
        return _OneDNNGroupedLinear.apply(x, w, sizes)
    return torch.cat([F.linear(x_e, w[e]) for e, x_e in enumerate(x.split(sizes))])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, weight, bias), through oneDNN where `uses_onednn` says so."""
    if uses_onednn(x, weight) and (bias is None or onednn_ready(bias)):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) whose forward is `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
