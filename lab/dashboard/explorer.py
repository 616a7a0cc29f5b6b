"""What the dashboard computes live, in seconds on a CPU: growing a small model, and expert load per domain.

Every size a user can ask for is bounded by `LIMITS` (checked here, not only by the widgets), so no
request can build a model larger than a few tens of millions of parameters.

- `shipped_source`: a pretrained source of data/sources (the default: growth is only worth watching on a
  model that has learned something), or `build_source` for a small custom one (random, or briefly trained);
  `default_target`: twice the width and heads, half again the depth, as the lab's experiments grow;
  `choice_notes`: which choices coincide (a depth rule with no new layers, AKI-Pro on a model without
  key-value groups) so the page can say why two of them give the same model.
- `grow_and_compare`: Scale-Up of an in-memory model (`lab.growth.plan_growth` + `grow_model`), then
  the largest logit gap and both losses on validation windows (`lab.verify.compare`): FPI with an
  integer width ratio and no new layers (or identity blocks) gives a gap at float rounding; stacking,
  interpolation and AKI do not (AquilaMoE Table 1).
  Masked structural growth (`msg`, Yao et al. 2024, arXiv 2305.02869) is exact at mask 0 for any growth;
  `mask` sets its masks by hand (no training happens here), to show what the untrained new units would do.
- `compare_methods`: the loss at initialisation of every growth rule on the same source and target.
- `domain_expert_load`: tokens per expert per MoE layer, measured separately on each domain's
  validation windows; `upcycled_demo_model` makes a small upcycled MoE to measure when a run has no
  checkpoint, with the load balancing of its choice, and `train_demo_moe` trains it a few steps, so that
  the balancing (load-balancing loss, aux-loss-free bias, none) has something to act on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from lab.config import ModelConfig
from lab.errors import LabError
from lab.growth import GrowthPlan, plan_growth
from lab.derive import grow_model
from lab.model import DecoderLM
from lab.verify import compare

# (min, max) of every size the explorer accepts, for the source and for the target.
LIMITS: dict[str, tuple[int, int]] = {"dim": (16, 512), "n_layers": (1, 12), "n_heads": (1, 16),
                                      "ffn_dim": (16, 2048), "train_steps": (0, 100)}
SOURCE_MAX = {"dim": 256, "n_layers": 6, "n_heads": 8, "ffn_dim": 1024}
# 8 windows of 64 tokens per domain: the comparison is on 2,048 tokens, a fraction of a second for every model
# the limits allow.
SEQ_LEN, N_PER_DOMAIN, BATCH = 64, 8, 4
# The growth rules of paper Table 1, as (label, method, depth).
RULES: tuple[tuple[str, str, str], ...] = (("FPI + stacking", "fpi", "stack"),
                                           ("FPI + interpolation", "fpi", "interpolate"),
                                           ("FPI + identity blocks", "fpi", "identity"),
                                           ("AKI + stacking", "aki", "stack"),
                                           ("AKI-Pro (interpolation)", "aki-pro", "interpolate"))


def _check(name: str, value: int, upper: int | None = None) -> None:
    low, high = LIMITS[name]
    high = min(high, upper) if upper is not None else high
    if not low <= value <= high:
        raise LabError(f"{name} must be in [{low}, {high}], got {value}")


def source_config(*, dim: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn_dim: int,
                  vocab_size: int = 4096) -> ModelConfig:
    """A small Aquila-style dense config (q/k/v bias, untied embeddings) within the explorer's limits."""
    for name, value in (("dim", dim), ("n_layers", n_layers), ("n_heads", n_heads), ("ffn_dim", ffn_dim)):
        _check(name, value, SOURCE_MAX[name])
    if dim % n_heads:
        raise LabError(f"dim {dim} is not divisible by n_heads {n_heads}")
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise LabError(f"n_heads {n_heads} is not divisible by n_kv_heads {n_kv_heads}")
    try:
        return ModelConfig(vocab_size=vocab_size, dim=dim, n_layers=n_layers, n_heads=n_heads,
                           n_kv_heads=n_kv_heads, head_dim=dim // n_heads, ffn_dim=ffn_dim, qkv_bias=True,
                           tie_embeddings=False, max_seq_len=SEQ_LEN)
    except ValueError as e:
        raise LabError(str(e)) from None


def validation_windows(tokens: dict[str, torch.Tensor], per_domain: int = N_PER_DOMAIN) -> dict[str, torch.Tensor]:
    """lab.data.validation_windows of SEQ_LEN tokens, `per_domain` of them, from the encoded split `tokens`."""
    from lab.data import validation_windows as windows_of

    return windows_of(SEQ_LEN, per_domain, tokens=tokens)


def build_source(cfg: ModelConfig, *, train_steps: int = 0, seed: int = 0,
                 train_tokens: dict[str, torch.Tensor] | None = None) -> DecoderLM:
    """A source model: random (seeded), then `train_steps` AdamW steps on the shipped corpus so its loss
    means something (a trained source shows what growth keeps and what it loses)."""
    _check("train_steps", train_steps)
    torch.manual_seed(seed)
    model = DecoderLM(cfg)
    if train_steps:
        from lab.data import TrainBatches
        from lab.train.setup import adamw
        from lab.train.step import train_step

        if train_tokens is None:
            raise LabError("training the source needs the train tokens")
        batches = TrainBatches(train_tokens, SEQ_LEN, BATCH, seed=seed)
        optimizer = adamw(model, 3e-3, weight_decay=0.0)
        model.train()
        for step in range(train_steps):
            train_step(model, [batches.batch(step)], optimizer, lr=3e-3)
    return model.eval()


def shipped_source(name: str) -> DecoderLM:
    """The shipped pretrained source `name` (lab.sources.SOURCE_NAMES) in fp32, in eval mode."""
    from lab.checkpoint import load_pretrained
    from lab.sources import SOURCE_NAMES, SOURCES_DIR

    if name not in SOURCE_NAMES:
        raise LabError(f"source {name!r}: the shipped ones are {', '.join(SOURCE_NAMES)}")
    return load_pretrained(SOURCES_DIR / name, dtype=torch.float32).eval()


def default_target(cfg: ModelConfig) -> dict[str, int]:
    """Twice the hidden size, heads and intermediate size, half again the layers (lab.growth.half_again_deeper):
    the growth of the lab's experiments, capped at the explorer's limits."""
    from lab.growth import half_again_deeper

    wanted = {"dim": 2 * cfg.dim, "n_heads": 2 * cfg.n_heads, "ffn_dim": 2 * cfg.ffn_dim,
              "n_layers": half_again_deeper(cfg.n_layers)}
    return {k: min(v, LIMITS[k][1]) for k, v in wanted.items()}


def choice_notes(plan: GrowthPlan) -> list[str]:
    """Why the chosen method or depth rule gives the same model as another choice would, if it does."""
    s, t = plan.source, plan.target
    notes = []
    if t.n_layers == s.n_layers:
        notes.append(f"The target has as many layers as the source ({s.n_layers}): the depth rule "
                     f"({plan.depth}) changes nothing. Add layers to see stacking, interpolation and identity differ.")
    if plan.method in ("aki", "aki-pro") and (t.dim, t.ffn_dim, t.n_heads) == (s.dim, s.ffn_dim, s.n_heads):
        notes.append("No new units: AKI only changes how new units are filled, so here it gives FPI's model.")
    if plan.method == "aki-pro" and s.n_kv_heads == s.n_heads:
        notes.append("The source has no key-value groups (as many kv heads as heads): AKI-Pro's grouped-query rule "
                     "is then AKI's rule, and AKI-Pro equals AKI with the same depth rule.")
    if plan.method == "msg" and t.n_layers > s.n_layers:
        notes.append(f"MSG's new layers are fresh (random, behind a mask), not copies: the depth rule ({plan.depth}) "
                     "only says where they sit, and the copies the layer-order figure shows are not made.")
    if plan.method == "aki-pro" and plan.depth != "interpolate":
        notes.append(f"AKI-Pro is the paper's name for AKI's width rule for grouped-query attention with "
                     f"interpolation depth; with {plan.depth} depth this is that width rule with {plan.depth} depth.")
    return notes


def plan_for(source: ModelConfig, *, method: str, depth: str, dim: int, n_layers: int, n_heads: int,
             ffn_dim: int, noise: float = 0.0, seed: int = 0) -> GrowthPlan:
    """`plan_growth` within the explorer's limits (every check of the plan applies too); msg gets the default
    ramp (`lab.growth.plan.MSG_RAMP_STEPS`), which only training reads."""
    for name, value in (("dim", dim), ("n_layers", n_layers), ("n_heads", n_heads), ("ffn_dim", ffn_dim)):
        _check(name, value)
    if not 0.0 <= noise <= 1.0:
        raise LabError(f"noise must be in [0, 1], got {noise}")
    return plan_growth(source, method=method, depth=depth, dim=dim, n_layers=n_layers, n_heads=n_heads,
                       ffn_dim=ffn_dim, noise=noise, seed=seed)


@dataclass
class GrowthResult:
    plan: GrowthPlan
    source_params: int
    grown_params: int
    max_logit_gap: float
    source_loss: float
    grown_loss: float
    seconds: float
    mask: float = 0.0  # msg: the value its masks were set to (0: as grown)


def grow_and_compare(source: DecoderLM, plan: GrowthPlan, tokens: torch.Tensor, *, mask: float = 0.0) -> GrowthResult:
    """Grow `source` by `plan` and compare the two models on `tokens` (n, T). For msg, `mask` is the value c of
    the new units' masks (0: as grown, the source's function; 1: the new units fully on), set without training:
    the ramp step nearest c * ramp_steps."""
    from lab.msg_masks import mask_ramp, set_masks

    if not 0.0 <= mask <= 1.0:
        raise LabError(f"mask must be in [0, 1], got {mask}")
    start = time.perf_counter()
    grown = grow_model(source, plan).eval()
    ramp = mask_ramp(grown.config)
    if ramp is not None and mask > 0:
        set_masks(grown, ramp.at(round(mask * ramp.ramp_steps)))
    gap, source_loss, grown_loss = compare(source, grown, tokens)
    return GrowthResult(plan, source.num_parameters(), grown.num_parameters(), gap, source_loss, grown_loss,
                        time.perf_counter() - start, mask if ramp is not None else 0.0)


def compare_methods(source: DecoderLM, tokens: torch.Tensor, **target) -> dict[str, GrowthResult | str]:
    """Every rule of `RULES` on the same source and target: its result, or why it cannot apply."""
    out: dict[str, GrowthResult | str] = {}
    for label, method, depth in RULES:
        try:
            plan = plan_for(source.config, method=method, depth=depth, **target)
        except LabError as e:
            out[label] = str(e)
            continue
        out[label] = grow_and_compare(source, plan, tokens)
    return out


def domain_expert_load(model: DecoderLM, windows: dict[str, torch.Tensor]) -> dict[str, list[list[float]]]:
    """{domain: [[tokens per expert] per MoE layer]} of an MoE on each domain's windows (lab.train.evaluate)."""
    from lab.train.evaluate import expert_load_by_domain

    return {domain: counts.float().tolist() for domain, counts in expert_load_by_domain(model, windows).items()}


def upcycled_demo_model(source: DecoderLM, *, n_experts: int = 8, top_k: int = 2, routing: str = "topk_softmax",
                        seed: int = 0, balance: str = "aux_loss") -> DecoderLM:
    """Sparse upcycling of `source` (experts = copies of its MLP, routers ~ N(0, 0.02), seeded); `balance` is how
    training will keep the load even (lab.moe: "aux_loss", "aux_free" or "none"; the expert biases start at 0)."""
    from lab.upcycle import UpcyclePlan
    from lab.derive import upcycle_model

    if not 2 <= n_experts <= 16 or not 1 <= top_k <= n_experts:
        raise LabError(f"experts must be in [2, 16] and top_k in [1, experts], got {n_experts} and {top_k}")
    plan = UpcyclePlan(n_experts=n_experts, top_k=top_k, routing=routing, seed=seed, balance=balance)
    return upcycle_model(source, plan).eval()


def train_demo_moe(model: DecoderLM, *, steps: int, train_tokens: dict[str, torch.Tensor], seed: int = 0,
                   lr: float = 1e-3) -> list[dict]:
    """Train the demo MoE in place for `steps` AdamW steps (batches of BATCH x SEQ_LEN tokens of the shipped
    corpus, the upcycled model's coefficients: load-balancing loss x 0.001, z-loss x 0.01); one train record
    per step (`tokens_per_expert`, `lm_loss`, `aux_loss`, and `expert_bias` under aux_free balancing), as a
    run's metrics.jsonl holds them."""
    from lab.data import TrainBatches
    from lab.train.setup import adamw
    from lab.train.step import train_step

    _check("train_steps", steps)
    batches = TrainBatches(train_tokens, SEQ_LEN, BATCH, seed=seed)
    optimizer = adamw(model, lr, weight_decay=0.1)
    model.train()
    records = [{"event": "train", "step": step + 1, **train_step(model, [batches.batch(step)], optimizer, lr=lr,
                                                                 grad_clip=1.0)}
               for step in range(steps)]
    model.eval()
    return records
