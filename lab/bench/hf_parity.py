"""Our model against transformers' on one device, in fp32 and in bf16: the parity tests' GPU half.

`tests/test_hf_parity.py` checks on the CPU in fp32 that the lab and transformers compute the same
logits from the same checkpoint; the GPU runs other kernels (cuBLAS, SDPA's fused attention, the grouped
matmul in bf16). This builds its own models, so it needs no download: a random lab model of a dense
(Llama layout) and of an MoE (Mixtral layout) config, written with `lab.save_pretrained` and opened by
transformers' `AutoModelForCausalLM`; both run the same tokens on the device in each dtype.

The weights are drawn so that every layer matters: matrices with unit-variance outputs (std 1/sqrt(fan
in)), norms near 1 but not 1, routers whose logits spread by about 1, so an MoE token rarely sits on a
tie between experts (which would make a parity hold or fail by chance).

The checks are on the logits' relative RMS difference, |a - b|_rms / |b|_rms:
- fp32: ours against transformers', at most 1e-4 (different kernels, the same precision);
- bf16: each model against the fp32 logits (the reference both models agree on): our error at most
  twice transformers' own, or 1e-2. Comparing the two bf16 models directly would not do: each op rounds
  to 8 bits of mantissa (2^-8, 0.4% relative) in both but not at the same places (our router computes in
  fp32, transformers' in bf16), and an MoE token whose experts' scores are that close takes another
  expert in one model than in the other. Measured on the CPU at these sizes, 4 layers: dense 1.6% between
  the bf16 models, MoE 7.6%. That figure, and the share of positions whose most likely token agrees, are
  reported, not checked.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import torch

from lab.config import ModelConfig

# Large enough that the GPU's kernels are the ones training takes (fused attention, grouped matmul).
DENSE = dict(vocab_size=4096, dim=1024, n_layers=4, n_heads=8, n_kv_heads=4, head_dim=128, ffn_dim=2816,
             max_seq_len=1024, rope_theta=500000.0, qkv_bias=False, tie_embeddings=False)
MOE = dict(n_experts=8, top_k=2, moe_ffn_dim=1408)
TOKENS = (2, 512)  # batch, sequence
# Seconds on a CPU: the same checks at toy sizes (`quick`).
QUICK_DENSE = dict(vocab_size=128, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128,
                   max_seq_len=64, rope_theta=10000.0, qkv_bias=False, tie_embeddings=False)
QUICK_MOE = dict(n_experts=4, top_k=2, moe_ffn_dim=64)
QUICK_TOKENS = (2, 32)

FP32_TOLERANCE = 1e-4  # ours against transformers'
BF16_FACTOR, BF16_FLOOR = 2.0, 1e-2  # ours against fp32, at most max(factor x transformers' against fp32, floor)


def configs(quick: bool = False) -> dict[str, ModelConfig]:
    dense = QUICK_DENSE if quick else DENSE
    return {"dense": ModelConfig(**dense), "moe": ModelConfig(**dense, **(QUICK_MOE if quick else MOE))}


@torch.no_grad()
def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights that make every layer count (see the module docstring), drawn on the CPU from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            value = 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
        elif name.endswith("tok_embeddings.weight"):
            value = torch.randn(p.shape, generator=gen)
        else:  # a matrix (out, in) or stacked experts (E, out, in): unit-variance outputs
            value = torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1])
        p.copy_(value.to(p.dtype))
    return model


def relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float().to(a.device)
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt()).item()


def compare(ours: torch.Tensor, theirs: torch.Tensor) -> dict:
    """The relative RMS difference and the top-1 agreement of two logit tensors (B, T, V)."""
    a, b = ours.float(), theirs.float()
    return {"relative_rms": relative_rms(a, b), "max_abs_diff": (a - b).abs().max().item(),
            "top1_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item()}


def bf16_tolerance(hf_vs_fp32: float) -> float:
    """How far our bf16 logits may stray from fp32 (relative RMS), given how far transformers' do."""
    return max(BF16_FACTOR * hf_vs_fp32, BF16_FLOOR)


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Cross-entropy of each position's logits for the next token (without any auxiliary loss)."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten()).item()


def check(name: str, cfg: ModelConfig, device: torch.device, tokens: tuple[int, int], workdir: Path) -> list[dict]:
    """One model against transformers' on `device`, in fp32 then bf16: a result per dtype."""
    import transformers

    from lab.checkpoint import save_pretrained
    from lab.model import DecoderLM

    ours = randomize_(DecoderLM(cfg)).eval()
    path = workdir / name
    save_pretrained(ours, path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.randint(0, cfg.vocab_size, tokens, generator=torch.Generator().manual_seed(1)).to(device)
    results, reference = [], None
    for dtype in (torch.float32, torch.bfloat16):  # fp32 first: it is the reference of bf16
        ours.to(device=device, dtype=dtype)
        theirs.to(device=device, dtype=dtype)
        with torch.no_grad():
            mine, other = ours(ids).logits, theirs(ids).logits
        result = {"model": name, "hf_model_type": theirs.config.model_type,
                  "dtype": str(dtype).removeprefix("torch."), **compare(mine, other),
                  "loss": next_token_loss(mine, ids), "hf_loss": next_token_loss(other, ids)}
        if reference is None:
            reference = other.float().cpu()
            result["tolerance"] = FP32_TOLERANCE
            result["passed"] = result["relative_rms"] <= FP32_TOLERANCE
        else:
            result["ours_vs_fp32"], result["hf_vs_fp32"] = relative_rms(mine, reference), relative_rms(other, reference)
            result["tolerance"] = bf16_tolerance(result["hf_vs_fp32"])
            result["passed"] = result["ours_vs_fp32"] <= result["tolerance"]
        results.append(result)
    del ours, theirs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def run(device: str = "cuda", quick: bool = False) -> dict:
    """Every model, fp32 and bf16, on `device`; a JSON-able report whose `passed` says whether all held."""
    import transformers

    device = torch.device(device)
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="lab-parity-") as tmp:
        for name, cfg in configs(quick).items():
            results += check(name, cfg, device, QUICK_TOKENS if quick else TOKENS, Path(tmp))
    return {"device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__, "quick": quick,
            "tf32_matmul": device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32,
            "seconds": time.perf_counter() - start, "results": results,
            "passed": all(r["passed"] for r in results)}


def format_report(r: dict) -> str:
    lines = [f"our model vs transformers' on {r['device_name']} ({r['device']}), torch {r['torch']}, "
             f"transformers {r['transformers']}"]
    for x in r["results"]:
        if "ours_vs_fp32" in x:
            check = (f"against fp32: ours {x['ours_vs_fp32']:.2e}, transformers' {x['hf_vs_fp32']:.2e} "
                     f"(ours <= {x['tolerance']:.2e}); between them {x['relative_rms']:.2e}")
        else:
            check = f"relative RMS {x['relative_rms']:.2e} (<= {x['tolerance']:.0e})"
        lines.append(f"  {x['model']:<5} ({x['hf_model_type']}) {x['dtype']:<8}  {check}  top-1 agree "
                     f"{100 * x['top1_agreement']:.1f}%  loss {x['loss']:.4f} vs {x['hf_loss']:.4f}  "
                     f"{'ok' if x['passed'] else 'FAILED'}")
    return "\n".join(lines)
