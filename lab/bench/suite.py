"""The benchmark suite (`make bench`): every benchmark of `lab.bench` in one run, written to
`results.json` (every figure, and the machine) and `results.md` (the tables the README shows).

Each benchmark times the lab against its reference in the same run, in turns, and reports medians
(`lab.bench.model_speed.time_in_turns`); a ratio is only ever between figures of one run. The
training throughput of the tiny recipes is also given as MFU against the matmul peak measured on this
machine (`lab.bench.matmul_peak`): a CPU has no data-sheet peak the lab knows. GPU MFU comes from
`python -m lab bench mfu --json OUT/mfu-NAME.json` on a GPU, not from this suite; such files found in
OUT are shown in results.md (and copied into results.json) next to the CPU figures.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
MFU_GLOB = "mfu-*.json"  # GPU MFU reports kept next to the results, shown in results.md


def machine() -> dict:
    """What the figures were measured on."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
            "torch": torch.__version__, "transformers": transformers.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def benchmarks(threads: int, quick: bool, workdir: str | None) -> dict[str, Callable[[], dict]]:
    """The suite's benchmarks by name, each a call returning its JSON-able report."""
    from lab.bench import dispatch, growth_speed, model_speed, sharded_load, training_speed, upcycle_speed

    def repeats(n: int) -> int:  # the quick mode runs everything once
        return 1 if quick else n

    warmup = repeats(2)
    return {
        "matmul_peak": lambda: matmul_peaks(quick),
        "model": lambda: model_speed.run(threads=threads, quick=quick, repeats=repeats(7), warmup=warmup),
        "dispatch": lambda: dispatch.run(threads=threads, quick=quick, repeats=repeats(7), warmup=warmup),
        "training": lambda: training_speed.run(threads=threads, quick=quick, workdir=workdir),
        "growth": lambda: growth_speed.run(threads=threads, quick=quick, workdir=workdir, repeats=repeats(5)),
        "upcycle": lambda: upcycle_speed.run(threads=threads, quick=quick, workdir=workdir, repeats=repeats(5)),
        "sharded_load": lambda: sharded_load.run(quick=quick, workdir=workdir),
    }


def matmul_peaks(quick: bool) -> dict:
    """This machine's measured matmul FLOP/s in fp32 and bf16 (the denominators of the CPU MFU)."""
    from lab.bench.matmul_peak import measure_matmul_peak
    from lab.bench.model_speed import matmul_path_peak

    size, rounds = (128, 1) if quick else (None, 5)
    peaks = {str(dtype).removeprefix("torch."): measure_matmul_peak("cpu", dtype, size=size, rounds=rounds)
             for dtype in (torch.float32, torch.bfloat16)}
    # The fp32 peak of the path the lab's linears take (oneDNN above lab.fast_linear's size gate, where
    # the tiny recipes' projections are): the CPU MFU's denominator, as it is the model benchmark's floor.
    peaks["float32_lab_path"] = matmul_path_peak(size=size or 512, rounds=rounds)[1]
    return peaks


def training_mfu(report: dict) -> None:
    """Add each tiny recipe's FLOPs/token and MFU against the measured fp32 peak of the lab's matmul path
    (in place; torch's `@` in a report from before that peak was measured)."""
    from lab.flops import flops_per_token, mfu
    from lab.train import load_recipe

    peaks = report.get("matmul_peak", {})
    peak = peaks.get("float32_lab_path", peaks.get("float32"))
    for r in report.get("training", {}).get("recipes", []):
        recipe = load_recipe(r["recipe"])
        r["flops_per_token"] = flops_per_token(recipe.model, recipe.data.seq_len)
        if peak:
            r["mfu_measured_peak"] = mfu(r["tokens_per_s"], r["flops_per_token"], peak)


def run(out: str | Path = "bench", threads: int = 2, quick: bool = False, only: list[str] | None = None,
        workdir: str | None = None, progress: bool = True) -> dict:
    """Run the suite and write `out`/results.json and `out`/results.md (each atomically); returns the report.

    With `only`, the other benchmarks' figures are kept from an earlier results.json of the same mode
    in `out` (`measured` says when each was taken; every ratio still comes from one run)."""
    torch.set_num_threads(threads)
    todo = benchmarks(threads, quick, workdir)
    report: dict = {"machine": machine(), "threads": threads, "quick": quick, "seconds": {}, "measured": {},
                    "load_average": {}}
    if only:
        todo = {name: fn for name, fn in todo.items() if name in only}
        earlier = _read(Path(out) / RESULTS_JSON)
        if earlier.get("quick") == quick and earlier.get("threads") == threads:
            keep = [name for name in benchmarks(threads, quick, workdir) if name in earlier and name not in todo]
            for name in keep:
                report[name] = earlier[name]
                report["seconds"][name] = earlier.get("seconds", {}).get(name)
                report["measured"][name] = earlier.get("measured", {}).get(name, earlier["machine"].get("date"))
                report["load_average"][name] = earlier.get("load_average", {}).get(name)
    for name, fn in tqdm(todo.items(), desc="bench", unit="benchmark", disable=not progress):
        # Other work on the machine slows every candidate, and threads waiting on each other most of all.
        report["load_average"][name] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        start = time.perf_counter()
        report[name] = fn()
        report["seconds"][name] = time.perf_counter() - start
        report["measured"][name] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if "training" in report and not quick:  # the quick mode's toy models are not the recipes' models
        training_mfu(report)
    # GPU runs of `python -m lab bench mfu --json OUT/mfu-NAME.json`, measured elsewhere; not the stand-in
    # shapes of `bench gpu --dry-run`, which measure nothing
    gpu = [r for r in (json.loads(p.read_text()) for p in sorted(Path(out).glob(MFU_GLOB))) if not r.get("dry_run")]
    if gpu:
        report["mfu"] = [{k: v for k, v in r.items() if k != "records"} for r in gpu]
    write(report, out)
    return report


def _read(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) and isinstance(report.get("machine"), dict) else {}


def write(report: dict, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in ((RESULTS_JSON, json.dumps(report, indent=2) + "\n"), (RESULTS_MD, markdown(report))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / name)


def markdown(r: dict) -> str:
    """The report as Markdown tables."""
    m = r["machine"]
    dates = sorted({d[:16] for d in r.get("measured", {}).values() if d}) or [m["date"]]
    lines = [f"Measured {' and '.join(dates)} on {m['cpu']} ({m['cores']} cores, {r['threads']} threads), "
             f"torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}"
             + _load_note(r) + (" — quick mode: toy shapes, the figures mean nothing" if r["quick"] else "")
             + ".", ""]
    if "model" in r:
        x = r["model"]
        lines += [f"**Forward+backward against transformers** (fp32, {x['tokens']} tokens, "
                  f"median of {x['repeats']}):", "",
                  "| case | lab ms | transformers' best | its ms | lab / best | fastest repeats | floor ms | "
                  "lab / floor |",
                  "|---|---:|---|---:|---:|---:|---:|---:|"]
        for case, c in x["cases"].items():
            ms = {t["candidate"]: t["median_ms"] for t in c["timings"]}
            floor = (f"{c['floor_ms']:.1f} | {c['over_floor']:.2f}" if "floor_ms" in c else "- | -")
            fastest = f"{c['ratio_of_fastest']:.3f}" if "ratio_of_fastest" in c else "-"
            lines.append(f"| {'MoE (Mixtral)' if case == 'moe' else 'dense (Qwen2)'} | {ms['lab']:.1f} | "
                         f"{c['reference']} | {ms[c['reference']]:.1f} | **{c['ratio']:.3f}** | {fastest} | "
                         f"{floor} |")
        if "matmul_path" in x:
            lines += ["", f"Floor: the step's FLOPs at the measured fp32 matmul peak of the lab's path "
                          f"({x['matmul_path']}, {x['matmul_peak_flops'] / 1e9:.0f} GFLOP/s). Fastest repeats: "
                          "the lab's fastest repeat over the fastest repeat of any transformers candidate (on a "
                          "shared machine the medians move with its load)."]
        others = [f"{t['candidate']} {t['median_ms']:.1f} ms" for c in x["cases"].values() for t in c["timings"]
                  if t["candidate"] not in ("lab", c["reference"])]
        dropped = [f"{n} (warm-up {v:.0f} ms)" for c in x["cases"].values() for n, v in c["dropped_warmup_ms"].items()]
        if others or dropped:
            notes = others + [f"dropped as over 5x the fastest: {d}" for d in dropped]
            lines += ["", "Other candidates: " + "; ".join(notes) + "."]
        lines.append("")
    if "dispatch" in r:
        x, s = r["dispatch"], r["dispatch"]["size"]
        lines += [f"**MoE dispatch ablation** (one layer, forward+backward, fp32, {s['tokens']} tokens, D {s['dim']}, "
                  f"F {s['ffn_dim']}, {s['n_experts']} experts top-{s['top_k']}, median of {x['repeats']}):", "",
                  "| dispatch | ms | / fastest |", "|---|---:|---:|"]
        lines += [f"| {n} | {ms:.2f} | {x['over_fastest'][n]:.2f} |" for n, ms in x["median_ms"].items()]
        lines.append("")
    if "training" in r:
        x = r["training"]
        lines += [f"**Training throughput** (`lab.train`, {x['precision']}, median over windows of "
                  f"{x['recipes'][0]['window']} steps after the first):", "",
                  "| recipe | parameters | active | tokens/s | MFU vs the lab path's measured fp32 peak |",
                  "|---|---:|---:|---:|---:|"]
        for t in x["recipes"]:
            u = f"{100 * t['mfu_measured_peak']:.1f}%" if "mfu_measured_peak" in t else "—"
            lines.append(f"| {t['recipe']} | {t['parameters'] / 1e6:.2f}M | {t['active_parameters'] / 1e6:.2f}M | "
                         f"{t['tokens_per_s']:.0f} | {u} |")
        lines.append("")
    if "matmul_peak" in r:
        p = r["matmul_peak"]
        names = {"float32": "float32 through torch's `@` (MKL on this CPU)", "bfloat16": "bfloat16 through `@`",
                 "float32_lab_path": "float32 through the lab's linears (lab.fast_linear; the MFU's denominator)"}
        lines += ["Measured matmul peaks (chained square products, best of the rounds): " +
                  ", ".join(f"{names.get(k, k)} {v / 1e9:.1f} GFLOP/s" for k, v in p.items()) + ".", ""]
    streams = [k for k in ("growth", "upcycle") if k in r]
    if streams:
        lines += ["**Streaming checkpoints against copying the same bytes** (bf16, child process, "
                  "median time, peak resident memory):", "",
                  "| operation | parameters | output | time | copy | / copy | peak memory | peak / output |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k in streams:
            x = r[k]
            what = "FPI + interpolate, 2x width and depth" if k == "growth" else \
                f"{x['request']['n_experts']} experts top-{x['request']['top_k']}"
            lines.append(f"| {k} ({what}) | {x['source_params'] / 1e6:.0f}M → {x['output_params'] / 1e6:.0f}M | "
                         f"{x['output_bytes'] / 1e6:.0f} MB | {x['op_s']:.2f} s | {x['copy_s']:.2f} s | "
                         f"{x['op_over_copy']:.2f} | {x['peak_rss'] / 1e6:.0f} MB | {x['peak_over_output']:.2f} |")
        lines.append("")
    if "sharded_load" in r:
        x = r["sharded_load"]
        lines += [f"**Sharded loading under FSDP2** (`lab.train.setup`, a {x['parameters'] / 1e6:.0f}M-parameter "
                  f"{x['checkpoint_dtype']} checkpoint, {x['nproc']} gloo processes, peak resident memory above "
                  "the idle process):", "",
                  "| rank | peak above idle | / model fp32 | floor (shard + largest tensor) / fp32 |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {p['rank']} | {p['peak_above_baseline'] / 2**20:.0f} MiB | **{p['ratio']:.3f}** | "
                  f"{p['floor_ratio']:.3f} |" for p in x["processes"]]
        lines.append("")
    if "mfu" in r:
        lines += ["**GPU training MFU** (`python -m lab bench mfu`, median step after warm-up):", "",
                  mfu_markdown(r["mfu"]), ""]
    else:
        lines += ["GPU MFU: not measured (no `mfu-*.json` from `python -m lab bench mfu` on a GPU here).", ""]
    return "\n".join(lines)


def _load_note(r: dict) -> str:
    loads = [v for v in r.get("load_average", {}).values() if v is not None]
    if not loads:
        return ""
    return f"; 1-minute load average {min(loads):.1f} to {max(loads):.1f} at the benchmarks' starts"


def mfu_markdown(runs: list[dict]) -> str:
    rows = ["| run | device | parameters (active) | tokens/s | MFU vs data sheet | MFU vs measured matmul peak |",
            "|---|---|---:|---:|---:|---:|"]
    for x in runs:
        a = f"{100 * x['mfu']:.1f}% of {x['peak_flops'] / 1e12:.0f} TFLOP/s" if x["mfu"] is not None else "—"
        b = f"{100 * x['mfu_measured_peak']:.1f}%" if x["mfu_measured_peak"] is not None else "—"
        rows.append(f"| {x['run']} | {x['device_name']} | "
                    f"{x['parameters'] / 1e9:.2f}B ({x['active_parameters'] / 1e9:.2f}B) "
                    f"| {x['tokens_per_s']:.0f} | {a} | {b} |")
    return "\n".join(rows)
