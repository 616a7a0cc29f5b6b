"""`python -m lab savings` prints the paper's two factors, 4.12 and 3.35."""

from __future__ import annotations

import json

import pytest

from lab.cli import main


def test_savings_prints_the_papers_factors(capsys):
    assert main(["savings"]) == 0
    out = capsys.readouterr().out
    assert "time savings factor:    4.12" in out
    assert "compute savings factor: 3.35" in out


def test_savings_json(capsys):
    assert main(["savings", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert round(data["time_savings"], 2) == 4.12 and round(data["compute_savings"], 2) == 3.35
    assert [row["phase"] for row in data["phases"]] == ["preparation", "scale-up", "scale-out", "from scratch"]


def _pipeline_dir(root, stages, baseline=None):
    """A pipeline run directory with merged train records: stages = [(label, tokens, flops, tokens/s)] with
    two records each, cumulative tokens and FLOPs as lab.pipeline.merge writes them."""
    from pathlib import Path

    out = Path(root) / "pipe"
    out.mkdir()
    records, tokens, flops = [], 0, 0.0
    for label, n, f, speed in stages:
        records.append({"event": "train", "stage": label, "stage_name": label, "tokens": tokens + n // 2,
                        "flops": flops + f / 2, "tokens_per_s": speed * 0.5})  # a slow first step
        records.append({"event": "eval", "stage": label, "tokens": tokens + n, "flops": flops + f})
        tokens, flops = tokens + n, flops + f
        records.append({"event": "train", "stage": label, "stage_name": label, "tokens": tokens, "flops": flops,
                        "tokens_per_s": speed})
        records.append({"event": "train", "stage": label, "stage_name": label, "tokens": tokens, "flops": flops,
                        "tokens_per_s": speed})
    (out / "meta.json").write_text(json.dumps({"run": "pipe", "environment": {"world_size": 1}}))
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if baseline is not None:
        n, f, speed = baseline
        b = out.with_name("pipe-baseline")
        b.mkdir()
        (b / "metrics.jsonl").write_text(json.dumps({"event": "train", "stage": "baseline", "tokens": n,
                                                     "flops": f, "tokens_per_s": speed}) + "\n")
    return out


def test_measured_phase_spends_the_measured_flops():
    from lab.flops import SECONDS_PER_DAY, measured_phase

    p = measured_phase("x", tokens=3e6, flops=4.5e15, tokens_per_s=2500.0, devices=4)
    assert p.tokens_b * 1e9 == pytest.approx(3e6)
    assert p.days * SECONDS_PER_DAY == pytest.approx(3e6 / 2500.0)
    assert p.days * SECONDS_PER_DAY * p.tflops * 1e12 == pytest.approx(4.5e15)  # time x FLOP/s = FLOPs
    assert p.params_b * 1e9 * 6 == pytest.approx(4.5e15 / 3e6)


def test_run_phases_take_each_stages_tokens_and_median_speed(tmp_path):
    from lab.flops import run_phases
    from lab.runs import load_run

    stages = [("preparation", 4000, 8e12, 1000.0), ("scale-up", 2000, 1e13, 400.0), ("scale-out", 1000, 9e12, 200.0)]
    phases = run_phases(load_run(_pipeline_dir(tmp_path, stages)).metrics.records)
    assert [p.name for p in phases] == ["preparation", "scale-up", "scale-out"]
    for p, (_, n, f, speed) in zip(phases, stages):
        assert p.tokens_b * 1e9 == pytest.approx(n)
        assert p.tokens_per_day_b * 1e9 == pytest.approx(speed * 86_400)  # the median, not the slow first step


def test_savings_of_a_run_against_its_baseline(tmp_path, capsys):
    stages = [("preparation", 4000, 8e12, 1000.0), ("scale-up", 2000, 1e13, 400.0), ("scale-out", 1000, 9e12, 200.0)]
    run_dir = _pipeline_dir(tmp_path, stages, baseline=(3000, 2.7e13, 250.0))
    assert main(["savings", "--run", str(run_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    days = sum(n / s for _, n, _, s in stages)
    scratch_days = 7000 / 250.0  # all the stages' tokens at the baseline's rate
    assert data["time_savings"] == pytest.approx(scratch_days / days)
    # The baseline's achieved FLOP/s (9e9 per token x 250 tokens/s) over each stage's achieved FLOP/s.
    stage_flops = sum(f for _, _, f, _ in stages)
    assert data["compute_savings"] == pytest.approx(scratch_days * 9e9 * 250.0 / stage_flops)
    assert [r["phase"] for r in data["phases"]] == ["preparation", "scale-up", "scale-out", "from scratch"]


def test_savings_run_needs_a_run_dir(tmp_path, capsys):
    assert main(["savings", "--run", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["savings", "--baseline", str(tmp_path)]) == 2
