"""`python -m lab bench gpu`, the one-H200 script, run on the CPU: its dry run, its refusal without a GPU,
its budget; and the parts it is made of (`bench mfu --time-limit`, `bench parity`)."""

from __future__ import annotations

import json
import sys
import time

import pytest

from lab.bench import gpu, hf_parity, mfu, suite
from lab.cli import main
from train_fixtures import tiny_recipe

MFU_KEYS = {"run", "device_name", "torch", "precision", "parameters", "active_parameters", "n_experts", "top_k",
            "tokens_per_s", "steps", "warmup", "mfu", "records", "dry_run"}


@pytest.mark.slow
def test_dry_run_writes_the_three_files(tmp_path):
    """The whole script on the CPU at stand-in shapes: three parts, three JSON files, all marked dry_run."""
    out = tmp_path / "bench"
    assert main(["bench", "gpu", "--dry-run", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["gpu.json", "mfu-dense-1b.json", "mfu-moe-8x1b.json"]
    summary = json.loads((out / "gpu.json").read_text())
    assert summary["dry_run"] is True and summary["device_name"] == "cpu" and summary["date"]
    assert summary["torch"] and summary["budget_s"] == 480 and 0 < summary["seconds"] < summary["budget_s"]
    parts = {p["name"]: p for p in summary["parts"]}
    assert list(parts) == ["parity", "mfu-dense-1b", "mfu-moe-8x1b"]
    assert all(p["status"] == "passed" and p["seconds"] > 0 for p in parts.values())
    parity = parts["parity"]["report"]
    assert parity["passed"] and parity["dry_run"] is True
    assert {(r["model"], r["hf_model_type"], r["dtype"]) for r in parity["results"]} == {
        ("dense", "llama", "float32"), ("dense", "llama", "bfloat16"),
        ("moe", "mixtral", "float32"), ("moe", "mixtral", "bfloat16")}
    dense = json.loads((out / "mfu-dense-1b.json").read_text())
    moe = json.loads((out / "mfu-moe-8x1b.json").read_text())
    for report in (dense, moe):
        assert MFU_KEYS <= set(report) and report["dry_run"] is True
        assert report["precision"] == "bf16" and report["tokens_per_s"] > 0
    assert dense["n_experts"] == 0 and not dense["activation_checkpointing"]
    assert (moe["n_experts"], moe["top_k"]) == (8, 2) and moe["activation_checkpointing"]
    assert parts["mfu-moe-8x1b"]["json"] == "mfu-moe-8x1b.json"


def test_refuses_without_a_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(["bench", "gpu", "--out", str(tmp_path / "bench")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bench gpu needs a CUDA GPU") and "--dry-run" in lines[0]
    assert not (tmp_path / "bench").exists()


def test_parts_beyond_the_budget_are_skipped(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "gpu", "--dry-run", "--out", str(out), "--budget-s", "5"]) == 0
    summary = json.loads((out / "gpu.json").read_text())
    assert [p["status"] for p in summary["parts"]] == ["skipped"] * 3
    assert all("of the budget left" in p["reason"] for p in summary["parts"])
    assert sorted(p.name for p in out.iterdir()) == ["gpu.json"]
    assert "skipped" in capsys.readouterr().out


def test_a_part_past_its_share_is_killed():
    start = time.perf_counter()
    status, seconds, error = gpu.run_part([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)
    assert status == "timeout" and "killed after 1 s" in error and time.perf_counter() - start < 10
    status, _, error = gpu.run_part([sys.executable, "-c", "import sys; sys.exit('error: no luck')"], timeout_s=30)
    assert (status, error) == ("failed", "error: no luck")


def test_the_moe_part_benches_the_upcycle_with_checkpointing(tmp_path):
    command, report = gpu.part_command(gpu.PARTS[2], tmp_path, dry_run=False, workdir=tmp_path, time_limit_s=200)
    assert command[1:5] == ["-m", "lab", "bench", "mfu"] and report == tmp_path / "mfu-moe-8x1b.json"
    text = " ".join(command)
    assert "recipes/gpu-1b.yaml" in text and "--experts 8 --top-k 2 --activation-checkpointing" in text
    assert "--time-limit 200" in text and "--no-matmul-peak" not in text


def test_mfu_stops_at_its_time_limit():
    """Past the limit, the run stops after its first timed step instead of taking all it was asked."""
    report = mfu.run(tiny_recipe(), steps=50, warmup=1, measure_peak=False, time_limit_s=0)
    assert (report["steps"], report["steps_requested"]) == (2, 50)
    assert [r["warmup"] for r in report["records"]] == [True, False]


def test_bf16_parity_is_judged_against_transformers_own_error():
    """Our bf16 logits may stray from the fp32 ones twice as far as transformers' do, or 1%."""
    assert hf_parity.bf16_tolerance(0.03) == pytest.approx(0.06)
    assert hf_parity.bf16_tolerance(0.001) == hf_parity.BF16_FLOOR == 0.01


def test_dry_run_reports_stay_out_of_results_md(tmp_path):
    """`make bench` shows GPU MFU reports found in bench/, never a dry run's stand-in figures."""
    out = tmp_path / "bench"
    out.mkdir()
    (out / "mfu-dense-1b.json").write_text(json.dumps({"run": "gpu-1b-dry-run", "dry_run": True}))
    report = suite.run(out, quick=True, only=["matmul_peak"], progress=False)
    assert "mfu" not in report and "GPU MFU: not measured" in (out / "results.md").read_text()
