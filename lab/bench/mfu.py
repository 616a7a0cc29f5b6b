"""MFU of a recipe's training step: N optimizer steps on random tokens, timed one by one.

The model is the recipe's, built as `lab.train` builds it (`hardware.meta_init`, `compile`,
`activation_checkpointing`, fused AdamW, FSDP2 under torchrun), but always freshly initialised: the
speed of a step does not depend on the weights' values, so a recipe that starts from a checkpoint
(`init_from`) only lends its config.json, and `experts`/`top_k` turn any dense recipe into its
upcycle's config (`lab.upcycle.upcycle_config`) without writing one. The tokens are random ids of the
recipe's shape (micro-batch x grad_accum x seq_len), so no corpus is read.

Each step is timed between device synchronisations. MFU = tokens/s x FLOPs/token (`lab.flops`,
PaLM's 6 N_active + 12 L H Q T) over a peak: the data sheet's (`hardware.gpu` / `peak_tflops`, or the
device's name when it is in `lab.flops.PEAK_FLOPS`) and the matmul peak measured on the device
(`lab.bench.matmul_peak`). The first `warmup` steps (compilation, allocator) are reported but left out
of the median. With `time_limit_s` the run takes no further step once that many seconds have passed
since it began (model building and compilation included), provided one step after the warm-up is timed:
a benchmark that must end within a budget (`lab.bench.gpu`) reports fewer steps rather than none.
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from lab import distributed
from lab.bench.matmul_peak import measure_matmul_peak
from lab.checkpoint import read_config
from lab.errors import LabError
from lab.flops import PEAK_FLOPS, active_parameters, flops_per_token, mfu


def datasheet_peak(recipe, device: torch.device) -> tuple[float | None, str | None]:
    """The recipe's peak FLOP/s, else the device's by name (e.g. "NVIDIA H200" -> H200-SXM); None on CPU."""
    if recipe.hardware.peak_flops is not None:
        return recipe.hardware.peak_flops, recipe.hardware.gpu or "hardware.peak_tflops"
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS.items():
        if key.split("-")[0] in name and ("PCIe" in key) == ("PCIe" in name):
            return flops, key
    return None, None


def model_config(recipe, experts: int | None = None, top_k: int = 2):
    """The recipe's model config (or its `init_from` checkpoint's), upcycled to `experts` when given."""
    if recipe.model is not None:
        cfg = recipe.model
    else:
        if not (Path(recipe.init_from) / "config.json").is_file():
            raise LabError(f"recipe init_from: {recipe.init_from} has no config.json; create the checkpoint "
                           f"first, or bench the dense recipe with --experts")
        cfg = read_config(recipe.init_from)[0].replace(dtype="float32")
    if experts:
        from lab.upcycle import UpcyclePlan, upcycle_config

        cfg = upcycle_config(cfg, UpcyclePlan(n_experts=experts, top_k=top_k))
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _past(deadline: float, info) -> bool:
    """Whether `deadline` has passed on any process: every process must stop after the same step."""
    flag = torch.tensor([1.0 if time.perf_counter() > deadline else 0.0])
    if info.sharded:
        flag = distributed.all_reduce(flag, info, op="max")
    return flag.item() > 0


def run(recipe, steps: int = 30, warmup: int = 3, experts: int | None = None, top_k: int = 2,
        measure_peak: bool = True, activation_checkpointing: bool | None = None,
        on_step: Callable[[dict], None] | None = None, time_limit_s: float | None = None) -> dict:
    """Train `steps` steps of `recipe` (path, dict or Recipe) on random tokens; a JSON-able report.

    `activation_checkpointing` overrides the recipe's switch when given. `on_step(record)` is called
    after every step with its step, seconds, tokens_per_s, loss and MFU(s). `time_limit_s`: see the
    module docstring.
    """
    from lab.train import load_recipe

    began = time.perf_counter()
    recipe = load_recipe(recipe)
    if steps <= warmup:
        raise LabError(f"steps ({steps}) must exceed warmup ({warmup})")
    cfg = model_config(recipe, experts, top_k)
    changes = {"model": cfg.to_dict(), "init_from": None}
    if experts:
        changes["run"] = f"{recipe.run} upcycled to {experts} experts top-{top_k}"
    if activation_checkpointing is not None:
        changes["hardware"] = {"activation_checkpointing": activation_checkpointing}
    recipe = recipe.replace(**changes)
    info = distributed.setup(recipe.hardware.device)
    try:
        deadline = None if time_limit_s is None else began + time_limit_s
        return _run(recipe, cfg, info, steps, warmup, measure_peak, on_step, deadline)
    finally:
        distributed.teardown(info)


def _run(recipe, cfg, info, steps, warmup, measure_peak, on_step, deadline=None) -> dict:
    from lab.train.setup import build_model, make_optimizer, place_model
    from lab.train.step import train_step

    device, spec = info.device, recipe.data
    if spec.batch_size % info.world_size:
        raise LabError(f"recipe data.batch_size: {spec.batch_size} must be divisible by the "
                       f"{info.world_size} processes")
    bf16 = recipe.train.precision == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak, peak_name = datasheet_peak(recipe, device)
    measured = measure_matmul_peak(device, dtype) if measure_peak else None

    model = place_model(build_model(recipe, cfg, None, keep_meta=info.sharded), recipe, info)
    optimizer = make_optimizer(model, recipe)
    autocast = contextlib.nullcontext
    if bf16 and not (info.sharded and device.type == "cuda"):
        autocast = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    local_batch = spec.batch_size // info.world_size
    tokens_per_step = spec.batch_size * spec.grad_accum * spec.seq_len
    fpt = flops_per_token(cfg, spec.seq_len)
    generator = torch.Generator().manual_seed(recipe.seed + info.rank)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    records = []
    for step in range(1, steps + 1):
        batches = [torch.randint(0, cfg.vocab_size, (local_batch, spec.seq_len), generator=generator).to(device)
                   for _ in range(spec.grad_accum)]
        _sync(device)
        start = time.perf_counter()
        loss = train_step(model, batches, optimizer, recipe.optim.lr, grad_clip=recipe.optim.grad_clip,
                          autocast=autocast)["loss"]
        _sync(device)
        seconds = time.perf_counter() - start
        per_device = tokens_per_step / seconds / info.world_size
        record = {"step": step, "seconds": seconds, "tokens_per_s": tokens_per_step / seconds,
                  "loss": loss, "warmup": step <= warmup}
        if peak is not None:
            record["mfu"] = mfu(per_device, fpt, peak)
        if measured is not None:
            record["mfu_measured_peak"] = mfu(per_device, fpt, measured)
        records.append(record)
        if on_step is not None and info.is_main:
            on_step(record)
        if not math.isfinite(record["loss"]):
            raise LabError(f"the loss is {record['loss']} at step {step} (try a lower optim.lr)")
        if deadline is not None and not record["warmup"] and _past(deadline, info):
            break

    timed = [r for r in records if not r["warmup"]]
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in timed)
    per_device = tokens_per_s / info.world_size
    hw = recipe.hardware
    report = {
        "run": recipe.run, "device": str(device), "world_size": info.world_size,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "precision": recipe.train.precision,
        "parameters": sum(p.numel() for p in model.parameters()) * (info.world_size if info.sharded else 1),
        "active_parameters": active_parameters(cfg), "n_experts": cfg.n_experts, "top_k": cfg.top_k,
        "flops_per_token": fpt, "tokens_per_step": tokens_per_step, "seq_len": spec.seq_len,
        "steps": len(records), "steps_requested": steps, "warmup": warmup, "tokens_per_s": tokens_per_s,
        "peak_flops": peak, "peak_name": peak_name, "measured_matmul_peak": measured,
        "mfu": mfu(per_device, fpt, peak) if peak is not None else None,
        "mfu_measured_peak": mfu(per_device, fpt, measured) if measured is not None else None,
        "compile": hw.compile, "activation_checkpointing": hw.activation_checkpointing,
        "meta_init": hw.meta_init, "fused_optimizer": hw.fused_optimizer, "records": records,
    }
    if device.type == "cuda":
        report["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    return report


def format_step(r: dict) -> str:
    parts = [f"step {r['step']:>4}", f"{r['seconds'] * 1e3:9.1f} ms", f"{r['tokens_per_s']:>11.0f} tok/s",
             f"loss {r['loss']:.3f}"]
    if "mfu" in r:
        parts.append(f"MFU {100 * r['mfu']:5.1f}% of peak")
    if "mfu_measured_peak" in r:
        parts.append(f"{100 * r['mfu_measured_peak']:5.1f}% of measured matmul peak")
    if r["warmup"]:
        parts.append("(warm-up)")
    return "  ".join(parts)


def format_report(r: dict) -> str:
    lines = [f"{r['run']}: {r['parameters'] / 1e9:.2f}B parameters ({r['active_parameters'] / 1e9:.2f}B active), "
             f"{r['device_name']} x {r['world_size']}, {r['precision']}, seq {r['seq_len']}, "
             f"{r['tokens_per_step']} tokens/step; compile {r['compile']}, activation checkpointing "
             f"{r['activation_checkpointing']}; torch {r['torch']}",
             f"  median of {r['steps'] - r['warmup']} steps after {r['warmup']} warm-up: "
             f"{r['tokens_per_s']:.0f} tokens/s"]
    if r["mfu"] is not None:
        lines.append(f"  MFU {100 * r['mfu']:.1f}% of {r['peak_name']} {r['peak_flops'] / 1e12:.1f} TFLOP/s")
    if r["mfu_measured_peak"] is not None:
        lines.append(f"  MFU {100 * r['mfu_measured_peak']:.1f}% of the measured matmul peak "
                     f"{r['measured_matmul_peak'] / 1e12:.3f} TFLOP/s")
    if "peak_memory_bytes" in r:
        lines.append(f"  peak device memory {r['peak_memory_bytes'] / 2**30:.1f} GiB")
    return "\n".join(lines)
