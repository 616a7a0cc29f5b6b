"""Sharded loading under FSDP2: each process's peak resident memory while a stage loads its starting checkpoint.

A random Aquila-style checkpoint (qwen2 layout: q/k/v bias, grouped-query attention, untied head) of
about 154M parameters is written in the lab's Hugging Face format (`write_lab_checkpoint`), by default
in fp32, the dtype a training stage saves and the next stage starts from (`--dtype bfloat16`: a bf16
checkpoint, which the stage converts to fp32 master weights as it reads). Then `nproc` gloo processes
under torchrun each run what a training stage runs before its first step (`lab.train.setup`:
`build_model` with `keep_meta`, `place_model`, `make_optimizer`) on a recipe whose `init_from` is that
checkpoint, and report

- the idle baseline: resident memory after imports and the process group's start, before loading. The
  first model built on the meta device imports torch._dynamo (~30 MiB, whatever the size); that import
  is done before the baseline and its cost reported apart (`startup_import_bytes`);
- the peak above the baseline while loading: VmHWM, reset to the current size just before loading by
  writing "5" to /proc/self/clear_refs (Linux); where that cannot be written, a thread samples VmRSS
  every millisecond instead (`method` says which);
- the floor the issue names, this process's fp32 shard plus the largest tensor (fp32), and the shard
  alone: what is left once each piece is read in place (`lab.train.setup.load_shards`).

The ratio is the peak above the baseline over the whole model's fp32 bytes; the target is at most 0.6 on
2 processes. Every figure comes from the workers' own measurement in this run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

# ~154M parameters: vocab 32000 x dim 768 (embedding and head 24.6M each), 14 layers of ~7.5M.
SIZE = dict(vocab_size=32000, dim=768, n_layers=14, n_heads=12, n_kv_heads=4, ffn_dim=2560, qkv_bias=True,
            tie_embeddings=False)
QUICK_SIZE = dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, qkv_bias=True,
                  tie_embeddings=False)
TARGET_RATIO = 0.6  # peak above baseline, at most this fraction of the model's fp32 bytes (2 processes)
DTYPES = ("float32", "bfloat16")


def run(quick: bool = False, dtype: str = "float32", nproc: int = 2, workdir: str | None = None,
        timeout_s: float = 900.0) -> dict:
    """Write the checkpoint, load it in `nproc` torchrun processes, and return the JSON-able report:
    one record per process (`processes`) and the model's fp32 bytes. Raises RuntimeError when a worker fails."""
    from lab.bench.stream_speed import write_random_source

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    sizes = {**(QUICK_SIZE if quick else SIZE), "dtype": dtype}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        params = write_random_source(tmp / "checkpoint", sizes)
        checkpoint_bytes = sum(p.stat().st_size for p in (tmp / "checkpoint").glob("*.safetensors"))
        (tmp / "reports").mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        # The workers import this lab, not whichever one their working directory or the venv would give.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                          env.get("PYTHONPATH")]))
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)  # a torchrun around the caller must not leak into the one started here
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "lab.bench.sharded_load", "--worker", str(tmp / "checkpoint"), str(tmp / "reports")]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the sharded-load workers failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        processes = [json.loads(p.read_text()) for p in sorted((tmp / "reports").glob("rank-*.json"),
                                                                key=lambda p: int(p.stem.split("-")[1]))]
    if len(processes) != nproc:
        raise RuntimeError(f"expected {nproc} worker reports, got {len(processes)}")
    fp32_bytes = params * 4
    for p in processes:
        p["ratio"] = p["peak_above_baseline"] / fp32_bytes
        p["floor_bytes"] = p["shard_bytes"] + p["largest_tensor_bytes"]
        p["floor_ratio"] = p["floor_bytes"] / fp32_bytes
        p["shard_ratio"] = p["shard_bytes"] / fp32_bytes
    return {"model": sizes, "parameters": params, "checkpoint_dtype": dtype, "checkpoint_bytes": checkpoint_bytes,
            "model_fp32_bytes": fp32_bytes, "nproc": nproc, "quick": quick, "processes": processes,
            "max_ratio": max(p["ratio"] for p in processes), "target_ratio": TARGET_RATIO,
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"), "torch": torch.__version__}


def format_report(r: dict) -> str:
    mib = 2**20
    lines = [f"sharded loading of a {r['parameters'] / 1e6:.0f}M-parameter {r['checkpoint_dtype']} checkpoint "
             f"({r['checkpoint_bytes'] / mib:.0f} MiB) on {r['nproc']} FSDP2 processes (gloo), lab.train.setup; "
             f"model fp32 {r['model_fp32_bytes'] / mib:.0f} MiB; torch {r['torch']}"
             + (" — quick mode: toy size, the figures mean nothing" if r["quick"] else "")]
    for p in r["processes"]:
        lines.append(f"  rank {p['rank']}: idle baseline {p['baseline_rss'] / mib:.0f} MiB, peak above it "
                     f"{p['peak_above_baseline'] / mib:.0f} MiB = {p['ratio']:.3f}x fp32 (target <= "
                     f"{r['target_ratio']}); floor {p['floor_bytes'] / mib:.0f} MiB = {p['floor_ratio']:.3f}x "
                     f"(shard {p['shard_bytes'] / mib:.0f} = {p['shard_ratio']:.3f}x + largest tensor "
                     f"{p['largest_tensor_bytes'] / mib:.0f}); kept after loading "
                     f"{p['kept_above_baseline'] / mib:.0f} MiB; {p['load_s']:.1f} s ({p['method']})")
    lines.append(f"  not counted above: the first meta-device model's imports (torch._dynamo), "
                 f"{max(p['startup_import_bytes'] for p in r['processes']) / mib:.0f} MiB, taken before the baseline")
    return "\n".join(lines)


# ---------------------------------------------------------------- the worker (one per torchrun process)

def _status(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident size; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Sampler:
    """The highest VmRSS seen by a thread polling every `interval` seconds (where VmHWM cannot be reset):
    a lower bound on the true peak, missing spikes shorter than the interval."""

    def __init__(self, interval: float = 0.001):
        self.peak, self.interval = _status("VmRSS"), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status("VmRSS"))
            time.sleep(self.interval)

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status("VmRSS"))


def _worker(checkpoint: Path, reports: Path) -> None:
    import torch.distributed.fsdp  # noqa: F401  imports are start-up, not loading
    import torch.distributed.tensor  # noqa: F401

    from lab import distributed
    from lab.model import parameter_shapes
    from lab.train.recipe import load_recipe
    from lab.train.setup import base_config, build_model, local_box, make_optimizer, place_model

    torch.set_num_threads(1)
    info = distributed.setup("cpu")
    recipe = load_recipe({"run": "sharded-load-bench", "init_from": str(checkpoint), "hardware": {"device": "cpu"}})
    cfg = base_config(recipe)
    # The first model built on the meta device imports torch._dynamo (its parameter initialisers decompose
    # through it): ~30 MiB of Python modules, whatever the model's size. Start-up, as the other imports are;
    # measured here and reported (`startup_import_bytes`), not hidden.
    before = _status("VmRSS")
    parameter_shapes(cfg)
    startup = _status("VmRSS") - before
    distributed.barrier(info)
    gc.collect()
    baseline = _status("VmRSS")
    cleared = _reset_peak()
    sampler = contextlib.nullcontext() if cleared else _Sampler()
    start = time.perf_counter()
    with sampler:
        # What lab.train.loop's _prepare does before the first step (the model and its optimizer).
        model = place_model(build_model(recipe, cfg, None, keep_meta=info.sharded), recipe, info)
        optimizer = make_optimizer(model, recipe)
    load_s = time.perf_counter() - start
    peak = _status("VmHWM") if cleared else sampler.peak
    kept = _status("VmRSS")
    shard = largest = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        shard += local.numel() * 4
        largest = max(largest, p.numel() * 4)
    shape = [s.stop - s.start for s in local_box(model.tok_embeddings.weight)] if info.sharded else None
    record = {"rank": info.rank, "world_size": info.world_size, "baseline_rss": baseline, "peak_rss": peak,
              "peak_above_baseline": peak - baseline, "kept_above_baseline": kept - baseline,
              "startup_import_bytes": startup, "shard_bytes": shard, "largest_tensor_bytes": largest,
              "embedding_piece_shape": shape,
              "load_s": load_s, "method": "VmHWM after clear_refs" if cleared else "VmRSS sampled every 1 ms"}
    del optimizer
    (reports / f"rank-{info.rank}.json").write_text(json.dumps(record) + "\n")
    distributed.barrier(info)
    distributed.teardown(info)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one torchrun process of the sharded-load benchmark")
    parser.add_argument("--worker", nargs=2, metavar=("CHECKPOINT", "REPORTS"), required=True)
    args = parser.parse_args(argv)
    _worker(Path(args.worker[0]), Path(args.worker[1]))


if __name__ == "__main__":
    main()
