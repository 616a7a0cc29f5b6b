"""Streaming upcycling of a checkpoint against copying the same bytes, in the same run (`lab.bench.stream_speed`).

The growth benchmark's ~120M-parameter random bf16 llama checkpoint is upcycled to 8 experts, top-2
(Mixtral layout, every layer): each MLP is written 8 times, about 510M parameters out. The targets
are the growth benchmark's: peak memory at most half the output size, time at most 1.5x the copy.
"""

from __future__ import annotations

from lab.bench.growth_speed import QUICK_SOURCE, SOURCE
from lab.bench.stream_speed import format_lines, measure

UPCYCLE = dict(n_experts=8, top_k=2)


def run(repeats: int = 5, threads: int = 2, quick: bool = False, workdir: str | None = None) -> dict:
    """Upcycle and copy `repeats` times in turns; returns a JSON-able report (medians, and the peak memory)."""
    return measure("upcycle", QUICK_SOURCE if quick else SOURCE, UPCYCLE, repeats, threads, workdir)


def format_report(r: dict) -> str:
    req = r["request"]
    return "\n".join([
        f"upcycle {r['source_params'] / 1e6:.0f}M -> {r['output_params'] / 1e6:.0f}M parameters "
        f"(bf16, {req['n_experts']} experts top-{req['top_k']}), {r['threads']} threads, "
        f"median of {r['repeats']}; torch {r['torch']}",
        *format_lines(r, "upcycling"),
    ])
