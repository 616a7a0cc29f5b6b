"""The one-GPU benchmark script: CUDA parity, then the MFU of the 1B dense and 8x1B MoE recipes, in a budget.

`python -m lab bench gpu --out bench` (or `bench/gpu.sh`) runs three parts, in this order, each as its own
`python -m lab bench ...` process (a part that hangs or overruns is killed without taking the others'
time, and each MFU run starts with the whole device memory):
1. parity: our model against transformers' on the GPU in fp32 and bf16, dense and MoE (`lab.bench.hf_parity`);
2. mfu-dense-1b: `bench mfu` of recipes/gpu-1b.yaml, a few steps after warm-up -> OUT/mfu-dense-1b.json;
3. mfu-moe-8x1b: the same model upcycled to 8 experts top-2 with activation checkpointing, as
   recipes/gpu-8x1b.yaml trains it (its upcycled checkpoint need not exist: only the shape matters)
   -> OUT/mfu-moe-8x1b.json.
OUT/gpu.json sums it up: device, torch, date, and each part's command, status (passed, failed, timeout,
skipped), seconds and, for parity, its report.

The budget (default 480 s, eight minutes) is shared out in advance: a part may run until the time left
minus what the later parts are expected to need (`Part.expected_s`), and is skipped when less than its
own expectation is left. The MFU runs stop taking steps 30 s before their share ends (`bench mfu
--time-limit`), so they report fewer steps rather than none. The expectations are estimates for one
H200 (per-block compilation, then ~5 s a dense step and ~10 s an MoE step of 262,144 tokens); a run's
gpu.json records what each part took.

`dry_run` runs the same parts, processes and files on the CPU with stand-in shapes (a two-layer model of
the recipes' layout, a few steps each, seconds in total), every JSON marked `"dry_run": true`: the test
suite runs the whole script this way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from lab.atomic_files import write_json_atomically
from lab.errors import LabError
from lab.paths import RECIPES_DIR, ROOT

SUMMARY = "gpu.json"
DENSE_RECIPE = RECIPES_DIR / "gpu-1b.yaml"
MOE_EXPERTS, MOE_TOP_K = 8, 2  # recipes/gpu-8x1b.yaml's upcycle
STOP_BEFORE_S = 30  # an MFU run takes no further step this long before its share ends (teardown, JSON)

# The stand-in shapes of a dry run: the recipes' layout at toy size, on the CPU, without compilation (the
# compiler's start-up alone would take longer than the whole dry run).
DRY_MODEL = dict(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128,
                 max_seq_len=64)
DRY_DATA = dict(seq_len=32, batch_size=2, grad_accum=2)
DRY_HARDWARE = dict(device="cpu", gpu=None, compile=False, meta_init="always")


@dataclass(frozen=True)
class Part:
    name: str
    expected_s: float  # on one H200
    dry_expected_s: float  # on a CPU, at the dry run's shapes
    steps: int = 0  # MFU parts: steps, the first `warmup` of them left out of the median
    warmup: int = 0


PARTS = (
    Part("parity", expected_s=60, dry_expected_s=15),
    Part("mfu-dense-1b", expected_s=150, dry_expected_s=15, steps=10, warmup=3),
    Part("mfu-moe-8x1b", expected_s=240, dry_expected_s=15, steps=8, warmup=3),
)
DRY_STEPS, DRY_WARMUP = 3, 1


def dry_recipe(directory: Path) -> Path:
    """recipes/gpu-1b.yaml at the dry run's stand-in shapes, written into `directory`."""
    recipe = yaml.safe_load(DENSE_RECIPE.read_text())
    recipe["run"] = "gpu-1b-dry-run"
    recipe["model"].update(DRY_MODEL)
    recipe["data"].update(DRY_DATA)
    recipe["hardware"].update(DRY_HARDWARE)
    path = directory / "gpu-1b-dry-run.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def part_command(part: Part, out: Path, dry_run: bool, workdir: Path, time_limit_s: float) -> tuple[list[str], Path]:
    """The `python -m lab bench ...` command line of a part, and the JSON file it writes."""
    lab = [sys.executable, "-m", "lab", "bench"]
    if part.name == "parity":
        report = workdir / "parity.json"
        return lab + ["parity", "--device", "cpu" if dry_run else "cuda", "--json", str(report)] + \
            (["--quick"] if dry_run else []), report
    report = out / f"{part.name}.json"
    recipe = dry_recipe(workdir) if dry_run else DENSE_RECIPE
    steps, warmup = (DRY_STEPS, DRY_WARMUP) if dry_run else (part.steps, part.warmup)
    command = lab + ["mfu", "--recipe", str(recipe), "--steps", str(steps), "--warmup", str(warmup),
                     "--time-limit", f"{time_limit_s:.0f}", "--json", str(report)]
    if dry_run:
        command.append("--no-matmul-peak")  # the CPU's peak is `make bench`'s business
    if part.name == "mfu-moe-8x1b":
        command += ["--experts", str(MOE_EXPERTS), "--top-k", str(MOE_TOP_K), "--activation-checkpointing"]
    return command, report


def run_part(command: list[str], timeout_s: float) -> tuple[str, float, str | None]:
    """Run one part's process (its output shown as it comes); (status, seconds, last error line or None).

    The process leads its own process group, so a part killed at its timeout takes its compiler workers
    with it."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=max(timeout_s, 1))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended in the meantime
            pass
        process.communicate()
        return "timeout", time.perf_counter() - start, f"killed after {timeout_s:.0f} s"
    seconds = time.perf_counter() - start
    sys.stderr.write(stderr)
    if process.returncode == 0:
        return "passed", seconds, None
    errors = [line for line in stderr.splitlines() if line.strip()]
    return "failed", seconds, errors[-1] if errors else f"exit status {process.returncode}"


def run(out: str | Path = "bench", dry_run: bool = False, budget_s: float = 480.0,
        progress=print) -> dict:
    """Run the parts within `budget_s` seconds; write OUT/gpu.json (and the MFU reports); the summary."""
    if not dry_run and not torch.cuda.is_available():
        raise LabError("bench gpu needs a CUDA GPU and this machine has none; --dry-run runs the same script on "
                       "the CPU with tiny stand-in shapes")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LabError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    summary = {"dry_run": dry_run, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "device_name": "cpu" if dry_run else torch.cuda.get_device_name(0), "torch": torch.__version__,
               "budget_s": budget_s, "parts": []}
    with tempfile.TemporaryDirectory(prefix="lab-bench-gpu-") as tmp:
        for i, part in enumerate(PARTS):
            expected = [p.dry_expected_s if dry_run else p.expected_s for p in PARTS]
            left = budget_s - (time.perf_counter() - began)
            share = min(left, max(expected[i], left - sum(expected[i + 1:])))
            command, report_path = part_command(part, out, dry_run, Path(tmp), max(share - STOP_BEFORE_S, 1))
            record = {"name": part.name, "command": command[1:]}  # without the interpreter's path
            if left < expected[i]:
                record.update(status="skipped", seconds=0.0,
                              reason=f"{left:.0f} s of the budget left, the part expects {expected[i]:.0f} s")
                progress(f"[{part.name}] skipped: {record['reason']}")
            else:
                progress(f"[{part.name}] {' '.join(command[2:])}  (at most {share:.0f} s)")
                record["status"], record["seconds"], error = run_part(command, share)
                if error is not None:
                    record["error"] = error
                if report_path.is_file():
                    report = json.loads(report_path.read_text())
                    report["dry_run"] = dry_run
                    if part.name == "parity":
                        record["report"] = report
                    else:
                        write_json_atomically(report_path, report)
                        record["json"] = report_path.name
                progress(f"[{part.name}] {record['status']} in {record['seconds']:.1f} s")
            summary["parts"].append(record)
    summary["seconds"] = time.perf_counter() - began
    write_json_atomically(out / SUMMARY, summary)
    return summary


def format_summary(summary: dict) -> str:
    kind = "dry run on the CPU" if summary["dry_run"] else summary["device_name"]
    lines = [f"bench gpu ({kind}, torch {summary['torch']}): {summary['seconds']:.0f} s of {summary['budget_s']:.0f} s"]
    for part in summary["parts"]:
        detail = part.get("json") or part.get("error") or part.get("reason") or ""
        lines.append(f"  {part['name']:<14} {part['status']:<8} {part['seconds']:7.1f} s  {detail}")
    return "\n".join(lines)
