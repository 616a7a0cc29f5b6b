"""Streaming growth of a checkpoint against copying the same bytes, in the same run (`lab.bench.stream_speed`).

A random bf16 llama checkpoint of about 120M parameters is grown by FPI with interpolation to twice
the hidden size, intermediate size and heads and twice the layers (about 770M parameters). The
targets: peak memory at most half the output size, time at most 1.5x the copy.
"""

from __future__ import annotations

from lab.bench.stream_speed import format_lines, measure, write_random_source

# ~122M parameters -> ~776M: hidden 1024 -> 2048, layers 8 -> 16, ffn 2240 -> 4480, heads 16 -> 32.
SOURCE = dict(vocab_size=16384, dim=1024, n_layers=8, n_heads=16, ffn_dim=2240, qkv_bias=False, dtype="bfloat16")
GROWTH = dict(dim=2048, n_layers=16, n_heads=32, ffn_dim=4480)
QUICK_SOURCE = dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, qkv_bias=False, dtype="bfloat16")
QUICK_GROWTH = dict(dim=128, n_layers=4, n_heads=8, ffn_dim=256)

__all__ = ["run", "format_report", "write_random_source"]


def run(repeats: int = 5, threads: int = 2, quick: bool = False, workdir: str | None = None) -> dict:
    """Grow and copy `repeats` times in turns; returns a JSON-able report (medians, and the peak memory)."""
    source_sizes, request = (QUICK_SOURCE, QUICK_GROWTH) if quick else (SOURCE, GROWTH)
    request = {**request, "method": "fpi", "depth": "interpolate"}
    return measure("grow", source_sizes, request, repeats, threads, workdir)


def format_report(r: dict) -> str:
    return "\n".join([
        f"grow {r['source_params'] / 1e6:.0f}M -> {r['output_params'] / 1e6:.0f}M parameters "
        f"(bf16, FPI + interpolate), {r['threads']} threads, median of {r['repeats']}; torch {r['torch']}",
        *format_lines(r, "growing"),
    ])
