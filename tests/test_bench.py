"""The benchmark suite and its parts run end to end and write well-formed results (they measure
nothing at these sizes: no test here checks a speed)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lab.bench import dispatch, mfu, suite
from lab.cli import main
from train_fixtures import tiny_recipe


def test_dispatches_compute_the_same_layer():
    """masks, sort+loop, sort+grouped_mm and all experts: one output, one set of gradients."""
    layer = dispatch.make_layer(**dispatch.QUICK_SIZE)
    keys = ("x", "router", "w_gate", "w_up", "w_down")
    results = {}
    for name in dispatch.available():
        out = dispatch.forward(layer, name)
        out.square().sum().backward()
        results[name] = (out.detach(), [layer[k].grad.clone() for k in keys])
        for k in keys:
            layer[k].grad = None
    reference_out, reference_grads = results.pop("masks")
    assert reference_out.abs().sum() > 0
    for name, (out, grads) in results.items():
        torch.testing.assert_close(out, reference_out, rtol=1e-5, atol=1e-6, msg=name)
        for k, a, b in zip(keys, grads, reference_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"{name} d{k}")


@pytest.mark.slow
def test_suite_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "bench"
    # the streaming and training parts have tests of their own; these run in seconds
    assert main(["bench", "all", "--quick", "--out", str(out), "--only", "matmul_peak", "dispatch", "model",
                 "--workdir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'results.json'}" in printed
    report = json.loads((out / "results.json").read_text())
    assert report["quick"] is True
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["torch"] == torch.__version__ and machine["cpu"]
    assert set(report["seconds"]) == {"matmul_peak", "dispatch", "model"}
    assert all(v > 0 and math.isfinite(v) for v in report["matmul_peak"].values())
    for case in ("moe", "dense"):
        assert report["model"]["cases"][case]["ratio"] > 0
    assert set(report["dispatch"]["median_ms"]) == set(dispatch.available())
    md = (out / "results.md").read_text()
    assert "| MoE (Mixtral) |" in md and "| dense (Qwen2) |" in md and "| sort+grouped_mm |" in md
    assert "GPU MFU: not measured" in md
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]  # no temp files left


def test_markdown_shows_every_section():
    """results.md from a report with every benchmark, and a GPU MFU report beside it."""
    stream = {"source_params": 1e6, "output_params": 4e6, "output_bytes": 8e6, "op_s": 1.0, "copy_s": 0.5,
              "op_over_copy": 2.0, "peak_rss": 3e6, "peak_over_output": 0.375, "request": {"n_experts": 8, "top_k": 2}}
    report = {
        "machine": {"date": "now", "cpu": "cpu", "cores": 2, "torch": "t", "transformers": "x", "python": "3"},
        "threads": 2, "quick": False, "matmul_peak": {"float32": 5e10}, "load_average": {"a": 0.5, "b": 3.25},
        "training": {"precision": "fp32", "recipes": [{"recipe": "r.yaml", "window": 10, "parameters": 1e6,
                                                       "active_parameters": 5e5, "tokens_per_s": 1000.0,
                                                       "mfu_measured_peak": 0.25}]},
        "growth": stream, "upcycle": stream,
        "mfu": [{"run": "gpu-1b", "device_name": "NVIDIA H200", "parameters": 1e9, "active_parameters": 1e9,
                 "tokens_per_s": 5e4, "mfu": 0.4, "peak_flops": 989.5e12, "mfu_measured_peak": 0.5}],
    }
    md = suite.markdown(report)
    assert "load average 0.5 to 3.2" in md  # what else the machine was doing is part of the figures
    assert "| r.yaml | 1.00M | 0.50M | 1000 | 25.0% |" in md
    assert "| upcycle (8 experts top-2) |" in md and "| growth (FPI" in md
    assert "| gpu-1b | NVIDIA H200 | 1.00B (1.00B) | 50000 | 40.0% of 990 TFLOP/s | 50.0% |" in md


def test_mfu_runner_on_cpu(tmp_path):
    """The GPU MFU runner's code path on the CPU: meta init, activation checkpointing, fused AdamW."""
    recipe = tiny_recipe(hardware={"peak_tflops": 1.0, "meta_init": "always", "activation_checkpointing": True,
                                   "fused_optimizer": "never"})
    seen = []
    report = mfu.run(recipe, steps=3, warmup=1, on_step=seen.append)
    assert [r["step"] for r in seen] == [1, 2, 3] and [r["warmup"] for r in seen] == [True, False, False]
    for r in seen:
        assert 0 < r["mfu"] < 1 and r["mfu_measured_peak"] > 0 and math.isfinite(r["loss"])
        assert "MFU" in mfu.format_step(r)
    assert report["tokens_per_step"] == 4 * 32 and report["peak_flops"] == 1e12
    assert report["mfu"] == pytest.approx(report["tokens_per_s"] * report["flops_per_token"] / 1e12)
    assert "% of the measured matmul peak" in mfu.format_report(report)


def test_mfu_runner_upcycles_the_config():
    report = mfu.run(tiny_recipe(), steps=2, warmup=1, experts=4, top_k=2, measure_peak=False)
    assert report["n_experts"] == 4 and report["top_k"] == 2
    assert report["parameters"] > report["active_parameters"]
    assert report["mfu"] is None and report["mfu_measured_peak"] is None  # CPU: no data-sheet peak


def test_mfu_command_rejects_bad_input(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(tiny_recipe()))
    assert main(["bench", "mfu", "--recipe", str(path), "--steps", "2", "--warmup", "2"]) == 2
    assert "error: --warmup (2) must be below --steps (2)" in capsys.readouterr().err
    missing = tiny_recipe()
    del missing["model"]
    missing["init_from"] = str(tmp_path / "nowhere")
    path.write_text(yaml.safe_dump(missing))
    assert main(["bench", "mfu", "--recipe", str(path), "--steps", "2", "--warmup", "1"]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_gpu_recipes_load():
    """The one-H200 recipes are valid, ~1B dense, and the MoE one is its 8-expert top-2 upcycle."""
    from lab.model import DecoderLM
    from lab.train import load_recipe
    from lab.upcycle import UpcyclePlan, upcycle_config

    dense = load_recipe("recipes/gpu-1b.yaml")
    with torch.device("meta"):
        n = DecoderLM(dense.model).num_parameters()
    assert 0.9e9 < n < 1.2e9
    hw = dense.hardware
    assert dense.train.precision == "bf16" and hw.compile and hw.device == "cuda" and hw.gpu == "H200-SXM"
    moe = load_recipe("recipes/gpu-8x1b.yaml")
    assert moe.init_from is not None and moe.hardware.compile
    expected = upcycle_config(dense.model, UpcyclePlan(n_experts=8, top_k=2))
    assert (expected.n_experts, expected.top_k) == (8, 2)


def test_only_keeps_the_other_benchmarks(tmp_path):
    """`--only` re-measures some benchmarks and keeps the others from the results already there."""
    out = tmp_path / "bench"
    first = suite.run(out, quick=True, only=["matmul_peak"], progress=False)
    earlier = json.loads((out / "results.json").read_text())
    old = {"size": dispatch.QUICK_SIZE, "repeats": 1, "median_ms": {"masks": 1.5}, "over_fastest": {"masks": 1.0}}
    earlier["dispatch"] = old  # as if measured by an earlier run
    earlier["measured"]["dispatch"] = "2000-01-01T00:00:00+0000"
    (out / "results.json").write_text(json.dumps(earlier))
    second = suite.run(out, quick=True, only=["matmul_peak"], progress=False)
    assert second["dispatch"] == old and second["measured"]["dispatch"].startswith("2000")
    assert second["measured"]["matmul_peak"] != "2000-01-01T00:00:00+0000"
    assert set(first["matmul_peak"]) == set(second["matmul_peak"]) == {"float32", "bfloat16", "float32_lab_path"}
    assert "| masks | 1.50 | 1.00 |" in (out / "results.md").read_text()
    # a full-size report is not mixed into a quick one
    earlier["quick"] = False
    (out / "results.json").write_text(json.dumps(earlier))
    assert "dispatch" not in suite.run(out, quick=True, only=["matmul_peak"], progress=False)


def test_the_fastest_reference_is_never_dropped():
    """Even when every reference's warm-up is over 5x the kept candidate's (a busy machine), one stays."""
    import time

    from lab.bench.model_speed import time_in_turns

    times, dropped = time_in_turns({"lab": lambda: None, "a": lambda: time.sleep(0.02),
                                    "b": lambda: time.sleep(0.04)}, repeats=1, warmup=1, keep=("lab",))
    assert set(times) == {"lab", "a"} and set(dropped) == {"b"}
