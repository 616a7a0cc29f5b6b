"""Streaming a checkpoint through the lab (growth or upcycling) against copying the same bytes.

The operation runs in a child process that reports its own wall time (the operation only: imports, and
torch's own imports on building the first model, come before the clock) and its peak resident memory
(VmHWM on Linux, else `ru_maxrss`; and the same after imports as a baseline). The reference is a copy of
the written safetensors files (`shutil.copyfile`), the same number of bytes, timed in turns with the
operation in the same run and in the same kind of child, after the same start-up; medians over the repeats.
Each timed child also starts just after as many bytes as it writes were deleted. On a virtual machine that
gives freed memory back to its host within seconds, writing 1.5 GB into the page cache took 0.4 s right
after a deletion and 1.5 s five seconds later (`cp` of the growth output, measured), and up to 4 s when
no memory had been freed; copies and conversions timed in different states measured anywhere from 0.16x
to 2.5x of each other. Both start after `os.sync()`, so neither waits on
pages an earlier run left for the disk.

The source is read with plain file reads, so only the tensors alive at a time count in the peak, not
the source file's pages.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# The child: grow, upcycle or copy, and report seconds and peak memory as one JSON line.
_CHILD = """
import json, os, resource, sys, time
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
from lab.growth import plan_growth
from lab.derive import grow_checkpoint, upcycle_checkpoint
from lab.model import parameter_shapes
from lab.upcycle import UpcyclePlan
op, src, out, request, threads = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
if op == "grow":
    plan = plan_growth(read_config(src)[0], **request)
    run = lambda: grow_checkpoint(src, out, plan)
elif op == "copy":  # the reference: the operation's output files, copied after the same start-up
    import shutil
    os.makedirs(out)
    files = sorted(name for name in os.listdir(src) if name.endswith(".safetensors"))
    run = lambda: [shutil.copyfile(os.path.join(src, name), os.path.join(out, name)) for name in files]
else:
    plan = UpcyclePlan(**request)
    run = lambda: upcycle_checkpoint(src, out, plan)
# Start-up, not the operation: building the first model imports more of torch.
parameter_shapes(read_config(src)[0])
baseline = peak_rss()
os.sync()  # no earlier run's pages still waiting for the disk: the copy is timed after a sync too
start = time.perf_counter()
run()
seconds = time.perf_counter() - start
peak = peak_rss()
print(json.dumps({"seconds": seconds, "peak_rss": peak, "baseline_rss": baseline}))
"""

OPERATIONS = ("grow", "upcycle")
TARGET_OVER_COPY = 1.5  # the operation's time, at most this many times the copy of its output's bytes
TARGET_PEAK_OVER_OUTPUT = 0.5  # its peak resident memory, at most this fraction of the output's bytes


def write_random_source(path: Path, sizes: dict, seed: int = 0) -> int:
    """A random checkpoint of `sizes` (lab config fields), written tensor by tensor; returns its parameters."""
    from lab.checkpoint import write_lab_checkpoint
    from lab.model import parameter_shapes
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


def _in_child(op: str, src: Path, out: Path, request: dict, threads: int) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-c", _CHILD, op, str(src), str(out), json.dumps(request), str(threads)],
                          capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {op} child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def output_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def measure(op: str, source_sizes: dict, request: dict, repeats: int = 3, threads: int = 2,
            workdir: str | None = None) -> dict:
    """Run `op` ("grow": `plan_growth(**request)`, "upcycle": `UpcyclePlan(**request)`) and the copy of
    its output `repeats` times in turns; a JSON-able report (medians, and the peak memory)."""
    if op not in OPERATIONS:
        raise ValueError(f"op must be one of {OPERATIONS}, got {op!r}")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        source_params = write_random_source(tmp / "src", source_sizes)
        runs, copies = [], []
        # Each timed child starts just after as many bytes as it will write were deleted (see the module's
        # docstring): the operation after the previous copy, the copy after the previous output. The first
        # turn only prepares that state and is not counted.
        for i in range(repeats + 1):
            out = tmp / f"out{i}"
            shutil.rmtree(tmp / f"copy{i - 1}", ignore_errors=True)
            run = _in_child(op, tmp / "src", out, request, threads)
            shutil.rmtree(tmp / f"out{i - 1}", ignore_errors=True)
            copy = _in_child("copy", out, tmp / f"copy{i}", {}, threads)
            if i:
                runs.append(run)
                copies.append(copy["seconds"])
            written = output_bytes(out)
        from lab.checkpoint import read_config
        from lab.model import DecoderLM

        target, _ = read_config(out)
        with torch.device("meta"):
            output_params = DecoderLM(target).num_parameters()
        source_bytes = output_bytes(tmp / "src")
    op_s = statistics.median(r["seconds"] for r in runs)
    copy_s = statistics.median(copies)
    peak = max(r["peak_rss"] for r in runs)
    baseline = min(r["baseline_rss"] for r in runs)
    return {"op": op, "source": source_sizes, "request": request, "source_params": source_params,
            "output_params": output_params, "source_bytes": source_bytes, "output_bytes": written,
            "threads": threads, "repeats": repeats, "op_s": op_s, "copy_s": copy_s,
            "op_times_s": [r["seconds"] for r in runs], "copy_times_s": copies,
            "peak_rss": peak, "baseline_rss": baseline,
            "peak_over_output": peak / written, "own_memory_over_output": (peak - baseline) / written,
            "op_over_copy": op_s / copy_s,
            "op_over_copy_each": [r["seconds"] / c for r, c in zip(runs, copies)],
            "torch": torch.__version__}


def format_lines(r: dict, what: str) -> list[str]:
    """The report's lines after its first: bytes, time against the copy, peak memory."""
    mb = 1e6
    return [
        f"  bytes: source {r['source_bytes'] / mb:.0f} MB, output {r['output_bytes'] / mb:.0f} MB",
        f"  time: {r['op']} {r['op_s']:.2f} s, copy of the output's bytes {r['copy_s']:.2f} s -> "
        f"{r['op']} / copy = {r['op_over_copy']:.2f} (target <= {TARGET_OVER_COPY}); repeat by repeat "
        f"{', '.join(f'{x:.2f}' for x in r['op_over_copy_each'])}",
        f"  peak memory: {r['peak_rss'] / mb:.0f} MB ({r['baseline_rss'] / mb:.0f} MB of it before {what}: "
        f"Python, torch) -> peak / output = {r['peak_over_output']:.2f} (target <= {TARGET_PEAK_OVER_OUTPUT}); "
        f"{what}'s own {r['own_memory_over_output']:.2f}",
    ]
