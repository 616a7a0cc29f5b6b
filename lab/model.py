"""The Aquila-style decoder: pre-norm RMSNorm, RoPE, grouped-query attention, SwiGLU, dense or MoE.

Aquila is a Llama-style decoder with bias on the q/k/v projections (the Hugging Face `qwen2` layout);
without the bias it is `llama`, and with MoE blocks `mixtral` or `qwen2_moe` (`lab.checkpoint` maps the
names). The numerics follow transformers' reference implementations step for step (fp32 RMSNorm,
fp32 RoPE tables, fp32 router), so that logits agree to float precision on the same checkpoint.
On the CPU in fp32 the linear layers and long causal attention run through oneDNN (`lab.fast_linear`,
`lab.causal_attention`): the same products, summed in another order.

Shapes: B batch, T tokens, D = dim, H = n_heads, K = n_kv_heads, hd = head_dim, V = vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lab import causal_attention, fast_linear
from lab.config import ModelConfig
from lab.kv_cache import KVCache
from lab.mlp import MLP
from lab.moe import MoE, MoEStats, aggregate_layer_losses
from lab.msg_masks import attach_masks


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 and cast back (as Llama and Qwen2 do)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("msg_mask", None, persistent=False)  # during an MSG ramp only (lab.msg_masks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        mean_square = x.pow(2).mean(-1, keepdim=True)
        if self.msg_mask is not None:  # MSG: the mean over the masked width, sum(mask) units (exactly 1.0 at mask 1)
            mean_square = mean_square * (x.shape[-1] / self.msg_mask.float().sum())
        x = x * torch.rsqrt(mean_square + self.eps)
        return self.weight * x.to(dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The rotation frequency of each dimension pair, theta^(-2i/hd), (hd/2,) fp32, optionally scaled.

    "linear" divides every frequency by `factor` (position interpolation). "llama3" (Llama 3.1)
    divides only the low frequencies, whose wavelength exceeds the original context divided by
    low_freq_factor, keeps the high ones (wavelength below context / high_freq_factor), and blends
    linearly in between.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    if scaling is None:
        return inv_freq
    factor = float(scaling["factor"])
    if scaling["rope_type"] == "linear":
        return inv_freq / factor
    context = float(scaling["original_max_position_embeddings"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    wavelength = 2 * math.pi / inv_freq
    # 0 where the wavelength is long (fully scaled), 1 where it is short (kept), linear in context/wavelength.
    keep = ((context / wavelength - low) / (high - low)).clamp(0.0, 1.0)
    return keep * inv_freq + (1 - keep) * inv_freq / factor


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype):
    """cos and sin of RoPE for the given positions, (T, hd), in the half-split layout of Llama.

    Computed in fp32 on each call (a few microseconds): no buffers, so a model built on the meta
    device and filled from a checkpoint needs no re-initialisation.
    """
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, hd/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + hd/2) of x (B, H, T, hd) by the position's angle."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def attention_mask(q_len: int, k_len: int, window: int | None, device) -> torch.Tensor:
    """Boolean mask (q_len, k_len), True where a query may look: causal, and within the window.

    The queries are the last q_len of the k_len positions (decoding with a cache).
    """
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= q_pos - k_pos < window
    return allowed


class Attention(nn.Module):
    """Grouped-query attention: H query heads share K key/value heads in groups of H // K."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.sliding_window = cfg.sliding_window
        self.q_proj = fast_linear.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = fast_linear.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = fast_linear.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = fast_linear.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.register_buffer("msg_mask", None, persistent=False)  # (H, 1, 1) during an MSG ramp (lab.msg_masks)

    def forward(self, x, cos, sin, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, K, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, K, S, hd): everything seen so far
        S = k.shape[2]
        mask, causal = None, False
        if (self.sliding_window is not None and S > self.sliding_window) or 1 < T < S:
            mask = attention_mask(T, S, self.sliding_window, x.device)
        elif T == S:
            causal = True  # the fast path: no mask tensor at all
        # else T == 1 with a cache: the new token sees every cached one, no mask needed
        gqa = self.n_heads != self.n_kv_heads
        if gqa and mask is not None:
            # SDPA's fused kernels take GQA only without a mask; with one, expand K/V to H heads.
            groups = self.n_heads // self.n_kv_heads
            k = k[:, :, None].expand(B, self.n_kv_heads, groups, S, self.head_dim).reshape(B, self.n_heads, S, -1)
            v = v[:, :, None].expand(B, self.n_kv_heads, groups, S, self.head_dim).reshape(B, self.n_heads, S, -1)
            gqa = False
        if causal and causal_attention.applies(q, k, v):  # fp32 on the CPU, long sequences: faster than SDPA's
            y = causal_attention.causal_attention(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa)  # (B, H, T, hd)
        if self.msg_mask is not None:  # MSG: new heads add c times their output
            y = y * self.msg_mask
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class Block(nn.Module):
    """x + attn(norm(x)), then + mlp(norm(x)); the MLP is an MoE in the config's MoE layers."""

    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe_layer(layer) else MLP(cfg.dim, cfg.ffn_dim)
        # (D,) during an MSG ramp: scales what the block adds to the residual stream (lab.msg_masks)
        self.register_buffer("msg_mask", None, persistent=False)

    def forward(self, x, cos, sin, cache=None) -> tuple[torch.Tensor, MoEStats | None]:
        x = x + self._masked(self.attn(self.attn_norm(x), cos, sin, cache))
        h = self.mlp_norm(x)
        if isinstance(self.mlp, MoE):
            h, stats = self.mlp(h)
            return x + self._masked(h), stats
        return x + self._masked(self.mlp(h)), None

    def _masked(self, update: torch.Tensor) -> torch.Tensor:
        return update if self.msg_mask is None else update * self.msg_mask


@dataclass
class ModelOutput:
    """What a forward pass returns.

    `loss` is what training minimises: `lm_loss + aux_loss_coef * aux_loss + z_loss_coef * z_loss`,
    without the `aux_loss` term when `balance` is "aux_free" or "none" (lab.moe).
    The auxiliary losses combine the MoE layers' as `router_loss_aggregation` says: their sum or their
    mean (None for a dense model); `router_entropy` is always the mean over layers (a diagnostic, not
    a loss); `tokens_per_expert` is (n_moe_layers, n_experts), counting the T * top_k assignments of
    each layer.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None
    tokens_per_expert: torch.Tensor | None = None
    router_entropy: torch.Tensor | None = None


class DecoderLM(nn.Module):
    """The lab's causal language model. `model(input_ids)` gives a ModelOutput with `.logits` (B, T, V)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # Recompute each block's activations in the backward pass instead of keeping them (a runtime
        # choice, not part of the config: the numbers are the same, memory smaller, compute ~1/3 more).
        self.activation_checkpointing = False
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()
        self.register_buffer("msg_mask", None, persistent=False)  # (D,) on the embedding, during an MSG ramp
        attach_masks(self)  # only a config that records an MSG ramp gets masks
        self.to(getattr(torch, cfg.dtype))

    def to_empty(self, *, device, recurse: bool = True) -> "DecoderLM":
        """nn.Module.to_empty, then the aux-free expert biases set to zero: `init_weights` writes parameters
        only, and a bias left as uninitialised memory would steer the routing (lab.moe)."""
        super().to_empty(device=device, recurse=recurse)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, MoE) and module.expert_bias is not None:
                    module.expert_bias.zero_()
        return self

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Normal(0, std) weights, zero biases, unit norms; the projections that write into the residual
        stream (o, down) are scaled by 1/sqrt(2 n_layers) so that the residual does not grow with depth."""
        for name, p in self.named_parameters():
            self.init_parameter_(name, p, std)

    @torch.no_grad()
    def init_parameter_(self, name: str, p: torch.Tensor, std: float = 0.02) -> None:
        """`init_weights` for the parameter `name`, written into `p` (it, or a tensor of its shape)."""
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        elif name.endswith(("o_proj.weight", "down_proj.weight", "w_down")):
            p.normal_(0.0, std / math.sqrt(2 * self.config.n_layers))
        else:
            p.normal_(0.0, std)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.tok_embeddings.weight if self.lm_head is None else self.lm_head.weight

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        cfg, p = self.config, self.tok_embeddings.weight
        return KVCache(cfg.n_layers, batch_size, cfg.n_kv_heads, cfg.head_dim, max_len, p.dtype, p.device)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                cache: KVCache | None = None) -> ModelOutput:
        """input_ids (B, T). labels (B, T) as in transformers: the model shifts them, -100 is ignored."""
        cfg = self.config
        B, T = input_ids.shape
        start = cache.length if cache is not None else 0
        x = self.tok_embeddings(input_ids)  # (B, T, D)
        if self.msg_mask is not None:  # MSG: new hidden dimensions start at c times their embedding
            x = x * self.msg_mask
        positions = torch.arange(start, start + T, device=input_ids.device)
        inv_freq = rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, device=x.device)
        cos, sin = rope_tables(positions, inv_freq, x.dtype)  # (T, hd)
        stats: list[MoEStats] = []
        recompute = self.activation_checkpointing and torch.is_grad_enabled() and cache is None
        for block in self.layers:
            if recompute:
                x, layer_stats = checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x, layer_stats = block(x, cos, sin, cache)
            if layer_stats is not None:
                stats.append(layer_stats)
        if cache is not None:
            cache.advance(T)
        # The LM head through oneDNN only above its own, higher gate (lab.fast_linear's
        # LM_HEAD_MIN_MACS_PER_THREAD): where the gain is large; below it F.linear's numbers are kept.
        logits = fast_linear.linear(self.norm(x), self.output_weight,
                                    min_macs_per_thread=fast_linear.LM_HEAD_MIN_MACS_PER_THREAD)  # (B, T, V)

        out = ModelOutput(logits=logits)
        if stats:
            how = cfg.router_loss_aggregation
            out.aux_loss = aggregate_layer_losses([s.load_balancing_loss for s in stats], how)
            out.z_loss = aggregate_layer_losses([s.z_loss for s in stats], how)
            out.tokens_per_expert = torch.stack([s.tokens_per_expert for s in stats])
            out.router_entropy = torch.stack([s.router_entropy for s in stats]).mean()
        if labels is not None:
            # Shift the labels, not the logits: slicing (B, T, V) logits would copy them, forward and back.
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)  # position t predicts token t + 1
            out.lm_loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
            out.loss = out.lm_loss
            if stats and cfg.balance == "aux_loss":
                out.loss = out.loss + cfg.aux_loss_coef * out.aux_loss + cfg.z_loss_coef * out.z_loss
            elif stats:  # "aux_free" and "none" balance without the loss: aux_loss is reported, not minimised
                out.loss = out.loss + cfg.z_loss_coef * out.z_loss
        return out

    def num_parameters(self, *, active: bool = False, embeddings: bool = True) -> int:
        """Parameter count; `active` counts top_k of n_experts routed experts (FLOPs per token)."""
        total = 0
        for name, p in self.named_parameters():
            n = p.numel()
            if not embeddings and ("tok_embeddings" in name or "lm_head" in name):
                continue
            if active and name.endswith(("w_gate", "w_up", "w_down")):
                n = n * self.config.top_k // self.config.n_experts
            total += n
        return total


def parameter_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter of a DecoderLM of config `cfg`, by name (built on the meta device: no
    memory). What a checkpoint, a growth or an upcycling rule must produce for that config."""
    with torch.device("meta"):
        model = DecoderLM(cfg)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}
