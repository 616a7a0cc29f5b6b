"""`python -m lab bench growth --quick`: the benchmark runs end to end (it measures nothing at this size)."""

from __future__ import annotations

from lab.cli import main


def test_growth_benchmark_runs(tmp_path, capsys):
    assert main(["bench", "growth", "--quick", "--repeats", "1", "--workdir", str(tmp_path),
                 "--json", str(tmp_path / "report.json")]) == 0
    printed = capsys.readouterr().out
    assert "grow / copy = " in printed and "peak / output = " in printed
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["output_params"] > report["source_params"] > 0
    assert 0 < report["output_bytes"] - 2 * report["output_params"] < 100_000  # bf16 tensors + the header
    assert report["peak_rss"] >= report["baseline_rss"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # the temporary checkpoints are gone
