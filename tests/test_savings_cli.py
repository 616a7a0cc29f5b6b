"""`python -m lab savings` prints the paper's two factors, 4.12 and 3.35."""

from __future__ import annotations

import json

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
