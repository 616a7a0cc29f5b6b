"""Streaming growth of a checkpoint against copying the same bytes, in the same run.

A random bf16 llama checkpoint of about 120M parameters is grown by FPI with interpolation to twice
the hidden size, intermediate size and heads and twice the layers (about 770M parameters). The growth
runs in a child process that reports its own wall time (the growth only, imports excluded) and its
peak resident memory (VmHWM on Linux, else `ru_maxrss`; and the same after imports as a baseline).
The reference is a copy of the grown safetensors file (`shutil.copyfile`), the same number of bytes
written. The targets: peak memory below half the output size, time within 2x of the copy.

The source is read through safetensors' memory map, so the pages of the source file it touched count
in the peak (they are page cache the kernel can drop, not allocations).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# ~122M parameters -> ~776M: hidden 1024 -> 2048, layers 8 -> 16, ffn 2240 -> 4480, heads 16 -> 32.
SOURCE = dict(vocab_size=16384, dim=1024, n_layers=8, n_heads=16, ffn_dim=2240, qkv_bias=False, dtype="bfloat16")
GROWTH = dict(dim=2048, n_layers=16, n_heads=32, ffn_dim=4480)
QUICK_SOURCE = dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, ffn_dim=128, qkv_bias=False, dtype="bfloat16")
QUICK_GROWTH = dict(dim=128, n_layers=4, n_heads=8, ffn_dim=256)

# The child: grow, and report seconds and peak memory as one JSON line.
_CHILD = """
import json, resource, sys, time
import torch

def peak_rss():
    # VmHWM belongs to this process image; ru_maxrss would start from the parent's size, which
    # Linux carries across fork and exec.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

from lab.checkpoint import read_config
from lab.growth import grow_checkpoint, plan_growth
src, out, request, threads = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
plan = plan_growth(read_config(src)[0], **request)
baseline = peak_rss()
start = time.perf_counter()
grow_checkpoint(src, out, plan)
seconds = time.perf_counter() - start
peak = peak_rss()
print(json.dumps({"seconds": seconds, "peak_rss": peak, "baseline_rss": baseline}))
"""


def write_random_source(path: Path, sizes: dict, seed: int = 0) -> int:
    """A random checkpoint of `sizes` (lab config fields), written tensor by tensor; returns its parameters."""
    from lab.checkpoint import write_lab_checkpoint
    from lab.checkpoint.streaming import parameter_shapes
    from lab.config import ModelConfig

    cfg = ModelConfig(**sizes)
    shapes = parameter_shapes(cfg)
    generator = torch.Generator().manual_seed(seed)

    def make(name: str, expert: int | None) -> torch.Tensor:
        if name.endswith("norm.weight"):
            return torch.ones(shapes[name])
        return torch.randn(shapes[name], generator=generator) * 0.02

    write_lab_checkpoint(path, cfg, make)
    return sum(torch.Size(s).numel() for s in shapes.values())


def _grow_in_child(src: Path, out: Path, request: dict, threads: int) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(out), json.dumps(request), str(threads)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the growth child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _output_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def run(repeats: int = 3, threads: int = 2, quick: bool = False, workdir: str | None = None) -> dict:
    """Grow and copy `repeats` times in turns; returns a JSON-able report (medians, and the peak memory)."""
    source_sizes, request = (QUICK_SOURCE, QUICK_GROWTH) if quick else (SOURCE, GROWTH)
    request = {**request, "method": "fpi", "depth": "interpolate"}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        source_params = write_random_source(tmp / "src", source_sizes)
        grows, copies = [], []
        for i in range(repeats):
            out = tmp / f"grown{i}"
            grows.append(_grow_in_child(tmp / "src", out, request, threads))
            output_bytes = _output_bytes(out)
            start = time.perf_counter()
            for f in sorted(out.glob("*.safetensors")):
                shutil.copyfile(f, tmp / f"copy-{f.name}")
            copies.append(time.perf_counter() - start)
            for f in tmp.glob("copy-*"):
                f.unlink()
            if i < repeats - 1:
                shutil.rmtree(out)
        from lab.checkpoint import read_config
        from lab.model import DecoderLM

        target, _ = read_config(out)
        with torch.device("meta"):
            output_params = DecoderLM(target).num_parameters()
        source_bytes = _output_bytes(tmp / "src")
    grow_s = statistics.median(g["seconds"] for g in grows)
    copy_s = statistics.median(copies)
    peak = max(g["peak_rss"] for g in grows)
    baseline = min(g["baseline_rss"] for g in grows)
    return {"source": source_sizes, "growth": request, "source_params": source_params,
            "output_params": output_params, "source_bytes": source_bytes, "output_bytes": output_bytes,
            "threads": threads, "repeats": repeats, "grow_s": grow_s, "copy_s": copy_s,
            "grow_times_s": [g["seconds"] for g in grows], "copy_times_s": copies,
            "peak_rss": peak, "baseline_rss": baseline,
            "peak_over_output": peak / output_bytes, "growth_memory_over_output": (peak - baseline) / output_bytes,
            "grow_over_copy": grow_s / copy_s, "torch": torch.__version__}


def format_report(r: dict) -> str:
    mb = 1e6
    return "\n".join([
        f"grow {r['source_params'] / 1e6:.0f}M -> {r['output_params'] / 1e6:.0f}M parameters "
        f"(bf16, FPI + interpolate), "
        f"{r['threads']} threads, median of {r['repeats']}; torch {r['torch']}",
        f"  bytes: source {r['source_bytes'] / mb:.0f} MB, output {r['output_bytes'] / mb:.0f} MB",
        f"  time: grow {r['grow_s']:.2f} s, copy of the output's bytes {r['copy_s']:.2f} s -> "
        f"grow / copy = {r['grow_over_copy']:.2f} (target <= 2)",
        f"  peak memory: {r['peak_rss'] / mb:.0f} MB ({r['baseline_rss'] / mb:.0f} MB of it before growing: "
        f"Python, torch) -> peak / output = {r['peak_over_output']:.2f} (target < 0.5); "
        f"growth's own {r['growth_memory_over_output']:.2f}",
    ])
