"""The reference runs in data/runs: the layout the dashboard and notebooks read, metrics and meta only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.experiments.reference_runs import check, expected_runs
from lab.run_export import export_run
from lab.runs import find_runs, load_run

DATA_RUNS = Path(__file__).resolve().parents[1] / "data" / "runs"


def _fake_run(path: Path, records: list[dict], **meta) -> Path:
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"run": path.name, **meta}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (path / "final").mkdir()
    (path / "final" / "model.safetensors").write_bytes(b"weights")
    return path


def test_export_keeps_metrics_and_meta_only(tmp_path):
    run = _fake_run(tmp_path / "work" / "a", [{"event": "eval", "step": 0, "val_loss_mean": 1.0}],
                    description="old")
    dest = export_run(run, tmp_path / "runs" / "growth" / "a", "what it is", growth={"method": "fpi"})
    assert sorted(p.name for p in dest.iterdir()) == ["meta.json", "metrics.jsonl"]
    meta = json.loads((dest / "meta.json").read_text())
    assert meta["description"] == "what it is" and meta["growth"] == {"method": "fpi"} and meta["run"] == "a"
    assert (dest / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    export_run(run, dest, "again")  # replacing an export leaves no temporary sibling behind
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a"]


def test_check_names_what_is_missing_or_heavy(tmp_path):
    out = tmp_path / "runs"
    for name in expected_runs():
        _fake_run(tmp_path / "work" / name, [{"event": "eval", "step": 0, "val_loss_mean": 1.0}])
        export_run(tmp_path / "work" / name, out / name, f"run {name}")
    assert check(out) == []
    (out / "routing" / "no-z-loss" / "meta.json").unlink()
    (out / "growth" / "aki-pro" / "model.safetensors").write_bytes(b"x")
    problems = check(out)
    assert any("no-z-loss" in p for p in problems) and any("model.safetensors" in p for p in problems)


def test_shipped_reference_runs_are_complete_and_small():
    assert check(DATA_RUNS) == []
    found = {str(p.relative_to(DATA_RUNS)) for p in find_runs(DATA_RUNS)}
    assert found == set(expected_runs())
    # The reference runs stay small; the exported experiments (every run of every seed, metrics at every
    # step) have a budget of their own.
    experiments = DATA_RUNS / "experiments"
    files = [p for p in DATA_RUNS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files if not p.is_relative_to(experiments)) < 5 * 2**20
    assert sum(p.stat().st_size for p in files if p.is_relative_to(experiments)) < 40 * 2**20
    pipeline = load_run(DATA_RUNS / "efficientscale-tiny")
    assert [r["stage"] for r in pipeline.events("transition")] == ["scale-up", "scale-out"]
    train = pipeline.events("train")
    assert [r["step"] for r in train] == sorted(r["step"] for r in train)
    assert {r["stage"] for r in train} == {"preparation", "scale-up", "scale-out"}
