"""Forward+backward time of the lab's model against transformers' on the same checkpoint.

Both models are built from one checkpoint that transformers writes, so they hold the same weights;
each step is the training step `loss = model(ids, labels=ids).loss; loss.backward()`. Candidates are
timed in turns (A, B, C, A, B, C, ...) so that a slow moment of the machine hits them all alike, and
the median over the repeats is reported. Ratios are ours / transformers' best, measured in this run.

The floor of each case is the time of the step's FLOPs (`lab.flops.flops_per_token`: 6 N + 12 L H Q T
per token, attention counted without its causal half skipped) at the measured matmul peak of the path
the lab's fp32 linears take here: oneDNN where `lab.fast_linear` applies, else `torch.mm` (MKL on x86).
lab / floor says how far the rest of the step (attention's softmax, norms, routing, the loss, small
products) keeps it from the matmuls' speed.

The process's allocator keeps freed memory for the next step (`lab.heap`), as `lab.train.train`
sets it: without it each step pays the kernel's page faults for its large tensors, in every candidate
(measured under load: lab / transformers 0.864 without, 0.817 with for the MoE; 0.820 and 0.814 dense).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

# The sizes of the comparison; vocab 4096 is the size of the lab's tokenizer.
MOE_SIZE = dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2)
DENSE_SIZE = dict(vocab_size=4096, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
EXPERTS_IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")


@dataclass
class Timing:
    case: str
    candidate: str
    median_ms: float
    times_ms: list[float]


def _step(model, ids) -> None:
    out = model(ids, labels=ids)
    out.loss.backward()
    for p in model.parameters():
        p.grad = None


def time_in_turns(candidates: dict[str, Callable[[], None]], repeats: int, warmup: int,
                  too_slow: float = 5.0, keep: tuple[str, ...] = ()) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Warm each candidate up, then time `repeats` rounds of one run each (seconds per run).

    A candidate whose last warm-up run is more than `too_slow` times the fastest one is dropped
    before the timed rounds (it cannot be the best, and would only make the benchmark long), unless
    it is in `keep`, or it is the fastest of the candidates outside `keep`; the second result maps each
    dropped candidate to that warm-up time.
    """
    warm = {}
    for name, fn in candidates.items():
        for _ in range(max(warmup, 1)):
            start = time.perf_counter()
            fn()
            warm[name] = time.perf_counter() - start
    fastest = min(warm.values())
    dropped = {name: t for name, t in warm.items() if t > too_slow * fastest and name not in keep}
    others = [name for name in warm if name not in keep]
    if others and all(name in dropped for name in others):
        # One warm-up run on a busy machine can be far off: the fastest reference always stays, so
        # there is something to compare with.
        dropped.pop(min(others, key=warm.get))
    times: dict[str, list[float]] = {name: [] for name in candidates if name not in dropped}
    for _ in range(repeats):
        for name in times:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return times, dropped


def matmul_path_peak(size: int = 512, iters: int = 10, rounds: int = 5) -> tuple[str, float]:
    """The path of the lab's fp32 linears on this CPU ("oneDNN" or "torch.mm") and its FLOP/s: chained
    (size, size) products, the best of `rounds` after a warm-up round, as `measure_matmul_peak`."""
    from lab import fast_linear
    from lab.bench.matmul_peak import measure_matmul_peak

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g) / size**0.5
    if not fast_linear.uses_onednn(a, b):
        return "torch.mm", measure_matmul_peak("cpu", torch.float32, size=size, iters=iters, rounds=rounds)
    best = float("inf")
    for r in range(rounds + 1):
        start = time.perf_counter()
        x = a
        for _ in range(iters):
            x = fast_linear.mm_bt(x, b)
        if r > 0:
            best = min(best, time.perf_counter() - start)
    return "oneDNN", 2.0 * size**3 * iters / best


def _transformers_candidates(model_cls, config, path: Path, moe: bool) -> dict[str, torch.nn.Module]:
    models = {}
    if not moe:
        models["transformers"] = model_cls.from_pretrained(path, dtype=torch.float32)
        return models
    for impl in EXPERTS_IMPLEMENTATIONS:
        try:
            models[f"transformers[{impl}]"] = model_cls.from_pretrained(path, dtype=torch.float32,
                                                                        experts_implementation=impl)
        except (TypeError, ValueError, ImportError):
            continue  # an older transformers, or an implementation this build lacks
    if not models:
        models["transformers"] = model_cls.from_pretrained(path, dtype=torch.float32)
    return models


def compare(case: str, tokens: int, batch: int, repeats: int, warmup: int,
            sizes: dict | None = None) -> tuple[list[Timing], dict[str, float], float]:
    """Time the lab's model and transformers' on one random checkpoint of the `case` ("moe" or "dense").

    Returns the timings, the candidates dropped as far too slow (name -> warm-up ms), and the FLOPs of
    one step."""
    import transformers

    import lab
    from lab.flops import flops_per_token

    moe = case == "moe"
    model_cls = transformers.MixtralForCausalLM if moe else transformers.Qwen2ForCausalLM
    config_cls = transformers.MixtralConfig if moe else transformers.Qwen2Config
    sizes = sizes or (MOE_SIZE if moe else DENSE_SIZE)
    torch.manual_seed(0)
    seq = tokens // batch
    ids = torch.randint(0, sizes["vocab_size"], (batch, seq))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / case
        config = config_cls(**sizes, max_position_embeddings=max(seq, 2048))
        model_cls(config).save_pretrained(path)
        models = {"lab": lab.load_pretrained(path)}
        models.update(_transformers_candidates(model_cls, config, path, moe))
    for m in models.values():
        m.train()
    times, dropped = time_in_turns({name: (lambda m=m: _step(m, ids)) for name, m in models.items()},
                                   repeats, warmup, keep=("lab",))
    timings = [Timing(case, name, statistics.median(t) * 1e3, [x * 1e3 for x in t]) for name, t in times.items()]
    flops = flops_per_token(models["lab"].config, seq) * batch * seq
    return timings, {name: t * 1e3 for name, t in dropped.items()}, flops


def run(tokens: int = 2048, batch: int = 1, repeats: int = 7, warmup: int = 2, threads: int = 2,
        quick: bool = False) -> dict:
    """Both comparisons; returns a JSON-able report with the ratios ours / transformers' best."""
    import transformers

    from lab.heap import keep_freed_memory

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(threads)
    keep_freed_memory()  # the host allocator as the lab's training sets it, for every candidate alike
    if quick:
        tokens = min(tokens, 128)
    path, peak = matmul_path_peak(rounds=1 if quick else 5)
    cases = {}
    for case in ("moe", "dense"):
        sizes = None
        if quick:  # a smoke run: tiny shapes
            base = MOE_SIZE if case == "moe" else DENSE_SIZE
            sizes = {**base, "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128}
        timings, dropped, flops = compare(case, tokens, batch, repeats, warmup, sizes)
        ours = next(t for t in timings if t.candidate == "lab")
        best = min((t for t in timings if t.candidate != "lab"), key=lambda t: t.median_ms)
        floor_ms = flops / peak * 1e3
        # Beside the medians, the ratio of the fastest repeats (each side's best, against the fastest
        # other candidate's best): on a shared virtual machine single repeats of one candidate spread by up
        # to four times (348 to 1460 ms), and the medians of seven with them; each side's fastest repeat is
        # the one least disturbed.
        fastest_other = min(min(t.times_ms) for t in timings if t.candidate != "lab")
        cases[case] = {"timings": [asdict(t) for t in timings], "dropped_warmup_ms": dropped,
                       "reference": best.candidate, "ratio": ours.median_ms / best.median_ms,
                       "ratio_of_fastest": min(ours.times_ms) / fastest_other,
                       "flops": flops, "floor_ms": floor_ms, "over_floor": ours.median_ms / floor_ms}
    return {"tokens": tokens, "batch": batch, "threads": threads, "repeats": repeats, "dtype": "float32",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "matmul_path": path, "matmul_peak_flops": peak, "cases": cases}


def format_report(report: dict) -> str:
    lines = [f"forward+backward, fp32, {report['threads']} threads, {report['tokens']} tokens "
             f"(batch {report['batch']}), median of {report['repeats']}; torch {report['torch']}, "
             f"transformers {report['transformers']}", ""]
    lines.append(f"{'case':<7} {'candidate':<28} {'median ms':>10}")
    for case, result in report["cases"].items():
        for t in result["timings"]:
            lines.append(f"{case:<7} {t['candidate']:<28} {t['median_ms']:>10.1f}")
        for name, ms in result["dropped_warmup_ms"].items():
            lines.append(f"{case:<7} {name:<28} {'dropped':>10}  (warm-up {ms:.0f} ms: over 5x the fastest)")
    lines.append("")
    for case, result in report["cases"].items():
        lines.append(f"{case}: lab / {result['reference']} = {result['ratio']:.3f} (medians); "
                     f"fastest repeats: {result['ratio_of_fastest']:.3f}")
    lines.append("")
    lines.append(f"floor: the step's FLOPs at the measured fp32 matmul peak of the lab's path here, "
                 f"{report['matmul_path']} {report['matmul_peak_flops'] / 1e9:.0f} GFLOP/s")
    for case, result in report["cases"].items():
        lines.append(f"{case}: {result['flops'] / 1e9:.1f} GFLOP, floor {result['floor_ms']:.1f} ms, "
                     f"lab / floor = {result['over_floor']:.2f}")
    return "\n".join(lines)
