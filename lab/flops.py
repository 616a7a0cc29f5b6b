"""FLOPs per token, model FLOPs utilisation (MFU), and the AquilaMoE paper's compute-savings calculator.

Training FLOPs per token follow PaLM (Chowdhery et al. 2022, appendix B): `6 N + 12 L H Q T`, where
`6 N` counts the forward (2 N) and backward (4 N) matmuls over the N parameters a token passes through,
and `12 L H Q T` the attention scores and their weighted sum (L layers, H query heads, Q head_dim,
T sequence length). Here N is explicit:
- the input embedding is NOT counted (a table lookup, no matmul);
- the LM head IS counted (a real D x V matmul per token; counted once even when tied to the embedding);
- every other parameter is, norms and biases included (they are a rounding error);
- an MoE layer counts only its active experts, top_k of n_experts, plus its router and shared expert.
That N is `matmul_parameters`. The parameter counts a model card reports are different, and also here, so
that every command, page and record uses one definition: `total_parameters` (every weight, each tied
tensor once) and `active_parameters` (the total less the routed experts a token does not use: Mixtral's
"12.9B active" convention, embeddings included). tests/test_flops.py checks all three against the
weights of the built model.

MFU is the achieved model FLOPs per second over the hardware's peak. The module has no dependency
beyond the lab's config, so notebooks and the dashboard can use it freely.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lab.config import ModelConfig

SECONDS_PER_DAY = 86_400

# Dense (no sparsity) bf16 tensor-core peak per device, in FLOP/s, from the vendors' data sheets.
PEAK_FLOPS: dict[str, float] = {
    "A100": 312e12,
    "A800": 312e12,
    "H100-PCIe": 756e12,
    "H100-SXM": 989.5e12,
    "H800-SXM": 989.5e12,
    "H200-SXM": 989.5e12,
}


def _attention_parameters(cfg: ModelConfig) -> int:
    q_out, kv_out = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    attn = cfg.dim * (q_out + 2 * kv_out) + q_out * cfg.dim
    return attn + (q_out + 2 * kv_out if cfg.qkv_bias else 0)


def _block_parameters(cfg: ModelConfig, layer: int, experts: int) -> int:
    """Block `layer`'s weights with `experts` of its routed experts counted (attention, MLP, two norms)."""
    D = cfg.dim
    if cfg.is_moe_layer(layer):
        mlp = D * cfg.n_experts + 3 * D * cfg.moe_ffn_dim * experts  # router, then the experts
        if cfg.shared_expert_ffn_dim:
            mlp += 3 * D * cfg.shared_expert_ffn_dim + D  # the shared expert and its gate
    else:
        mlp = 3 * D * cfg.ffn_dim
    return _attention_parameters(cfg) + mlp + 2 * D


def matmul_parameters(cfg: ModelConfig) -> int:
    """N of `flops_per_token`: the parameters one token's matmuls use (see the module docstring)."""
    blocks = sum(_block_parameters(cfg, layer, cfg.top_k) for layer in range(cfg.n_layers))
    return blocks + cfg.dim + cfg.dim * cfg.vocab_size  # final norm, LM head


def active_parameters(cfg: ModelConfig) -> int:
    """The parameters one token uses, as model cards count them: every weight except the routed experts it
    is not sent to (top_k of n_experts per MoE layer); the embedding table counts (once when tied)."""
    return matmul_parameters(cfg) + (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.dim)


def total_parameters(cfg: ModelConfig) -> int:
    """Every weight of a model of config `cfg`, each tied tensor once (no model is built)."""
    blocks = sum(_block_parameters(cfg, layer, cfg.n_experts) for layer in range(cfg.n_layers))
    embeddings = cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2)
    return blocks + cfg.dim + embeddings


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token: 6 N_active + 12 L H Q T (PaLM, appendix B)."""
    return 6.0 * matmul_parameters(cfg) + 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s (tokens/s x FLOPs/token) over the peak FLOP/s, in [0, 1]."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}")
    return tokens_per_s * flops_per_token / peak_flops


# ---------------------------------------------------------------------------- paper Table 6
@dataclass(frozen=True)
class Phase:
    """One training phase of AquilaMoE's Table 6: its cluster, model size and token budget.

    `tflops_per_device` is in TFLOP/s (10^12 FLOP per second) per device: the paper's 989.5 and 240 are
    per-device rates of that order, and a measured phase holds its achieved rate. `params_b` is the
    model's (active) size in billions, the N of 6N.
    """

    name: str
    devices: int
    tflops_per_device: float
    params_b: float
    tokens_b: float
    tokens_per_day_b: float

    @property
    def days(self) -> float:
        return self.tokens_b / self.tokens_per_day_b

    @property
    def tflops(self) -> float:
        """The cluster's rate, TFLOP/s."""
        return self.devices * self.tflops_per_device

    @property
    def utilisation(self) -> float:
        """The share of the cluster's rate the phase's throughput implies: 6N FLOPs per token x tokens per
        second / (devices x TFLOP/s per device)."""
        flops_per_s = 6 * self.params_b * 1e9 * self.tokens_per_day_b * 1e9 / SECONDS_PER_DAY
        return flops_per_s / (self.tflops * 1e12)

    def on_cluster(self, *, devices: int | None = None, tflops_per_device: float | None = None) -> "Phase":
        """The same model and tokens on another cluster at the same utilisation: tokens per day follow
        the cluster's rate (twice the devices or twice the rate per device, twice the tokens per day)."""
        devices = self.devices if devices is None else int(devices)
        rate = self.tflops_per_device if tflops_per_device is None else float(tflops_per_device)
        scale = devices * rate / self.tflops
        return replace(self, devices=devices, tflops_per_device=rate, tokens_per_day_b=self.tokens_per_day_b * scale)


def savings(phases: tuple[Phase, ...] | list[Phase], scratch: Phase) -> tuple[float, float]:
    """(time savings, compute savings) of training through `phases` instead of `scratch` (Table 6).

    time = (N_s / R_s) / sum_i (N_i / R_i); compute = (N_s / R_s * C_s) / sum_i (N_i / R_i * C_i), with
    N tokens, R tokens per day and C = devices x TFLOP/s per device, the cluster's rate. The paper
    reports 4.12 and 3.35 for its own numbers. A phase moved to a slower cluster at the same utilisation
    (`Phase.on_cluster`) takes longer but spends the same compute.
    """
    time = scratch.days / sum(p.days for p in phases)
    compute = scratch.days * scratch.tflops / sum(p.days * p.tflops for p in phases)
    return time, compute


# ------------------------------------------------------------------ Table 6 from a measured run


def measured_phase(name: str, tokens: float, flops: float, tokens_per_s: float, devices: int = 1) -> Phase:
    """A Table 6 row from measured figures: `tokens` trained on at `tokens_per_s`, spending `flops`.

    TFLOP/s per device is the achieved rate (FLOPs per token x tokens/s / devices), so days x devices x
    TFLOP/s per device is the phase's measured FLOPs; the model size is FLOPs per token / 6 (the 6N rule,
    attention included).
    """
    if tokens <= 0 or flops <= 0 or tokens_per_s <= 0 or devices <= 0:
        raise ValueError(f"phase {name!r}: tokens, flops, tokens_per_s and devices must be > 0")
    per_token = flops / tokens
    return Phase(name, devices, per_token * tokens_per_s / devices / 1e12, per_token / 6 / 1e9, tokens / 1e9,
                 tokens_per_s * SECONDS_PER_DAY / 1e9)


def _number(value) -> float:
    """A metrics field as a float; 0 for a missing or non-numeric one (hand-edited or uploaded files)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def run_phases(records: list[dict], devices: int = 1) -> list[Phase]:
    """One measured Phase per stage of a pipeline's merged `train` records (cumulative tokens and FLOPs,
    lab.pipeline.merge), in order: the stage's tokens and FLOPs, and its median tokens/s (the median
    keeps the first steps' warm-up out). Stages without tokens, FLOPs or throughput are left out."""
    stages: dict[str, list[dict]] = {}
    for r in records:
        if r.get("event") == "train":
            stages.setdefault(str(r.get("stage_name") or r.get("stage")), []).append(r)
    phases, tokens_before, flops_before = [], 0.0, 0.0
    for name, rs in stages.items():
        tokens, flops = _number(rs[-1].get("tokens")), _number(rs[-1].get("flops"))
        speeds = sorted(s for s in (_number(r.get("tokens_per_s")) for r in rs) if s > 0)
        if tokens > tokens_before and flops > flops_before and speeds:
            label = str(rs[-1].get("stage") or name)
            phases.append(measured_phase(label, tokens - tokens_before, flops - flops_before,
                                         speeds[len(speeds) // 2], devices))
        tokens_before, flops_before = tokens, flops
    return phases


def whole_run_phase(records: list[dict], name: str = "from scratch", devices: int = 1) -> Phase | None:
    """All of a run's `train` records as one measured Phase (a from-scratch baseline), or None without
    tokens, FLOPs or throughput."""
    phases = run_phases([{**r, "stage_name": name, "stage": name} for r in records], devices)
    return phases[0] if phases else None


def scratch_phase(phases: list[Phase] | tuple[Phase, ...], baseline: Phase | None = None) -> Phase:
    """Table 6's from-scratch row for measured `phases`: the final model on all their tokens, at the
    throughput of `baseline` (a from-scratch run of that model) when given, else at the last phase's
    (as the paper does: its scratch row takes the Scale-Out cluster's 25 B tokens/day)."""
    like = baseline or phases[-1]
    return Phase("from scratch", like.devices, like.tflops_per_device, like.params_b,
                 sum(p.tokens_b for p in phases), like.tokens_per_day_b)
