"""The SwiGLU feed-forward block shared by dense layers and the MoE's shared expert."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lab import fast_linear


class MLP(nn.Module):
    """SwiGLU (Shazeer 2020): down(silu(gate(x)) * up(x)); gate and up share one intermediate index."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.gate_proj = fast_linear.Linear(dim, ffn_dim, bias=False)
        self.up_proj = fast_linear.Linear(dim, ffn_dim, bias=False)
        self.down_proj = fast_linear.Linear(ffn_dim, dim, bias=False)
        self.register_buffer("msg_mask", None, persistent=False)  # (F,) during an MSG ramp (lab.msg_masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        if self.msg_mask is not None:  # MSG: new intermediate units add c times their output
            h = h * self.msg_mask
        return self.down_proj(h)
