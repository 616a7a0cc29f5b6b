"""Hostile submissions (tests/grading_fixtures/hostile/) earn nothing, leave nothing running, write nothing outside.

One folder holds every hostile file, an honest solution, a file without its assignment marker and a
notebook that is not JSON; it is graded the way an instructor does (`python -m lab grade DIR --hidden
--csv --json --feedback`). Needs bubblewrap (`.ci/run` installs it): the checks on files and processes
are about the sandbox; without it the verdicts are still the grader's but the filesystem is shared.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from lab.cli import main
from lab.grading.assignments import solution_file
from lab.grading.sandbox import bwrap_path

HOSTILE = Path(__file__).parent / "grading_fixtures" / "hostile"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed (apt-get install bubblewrap)")]


def processes_mentioning(word: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if word in cmdline:
                found.append(cmdline)
    return found


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the folder once; the tests below read what it produced."""
    root = tmp_path_factory.mktemp("hostile")
    mark = uuid.uuid4().hex[:10]
    outside = root / "outside"
    collected = root / "collected"
    outside.mkdir()
    collected.mkdir()
    for path in sorted(HOSTILE.glob("*.py")):
        text = path.read_text().replace("{OUTSIDE}", str(outside)).replace("{MARK}", mark)
        (collected / path.name).write_text(text)
    shutil.copy(solution_file("01_fpi"), collected / "zz_honest.py")
    (collected / "no_marker.py").write_text("def growth_map(old, new):\n    return None\n")
    (collected / "not_json.ipynb").write_text("{ this is not a notebook")
    before = {p.name: p.read_bytes() for p in collected.iterdir()}
    out = root / "out"
    out.mkdir()
    code = main(["grade", str(collected), "--hidden", "--timeout", "20", "--csv", str(out / "grades.csv"),
                 "--json", str(out / "results.json"), "--feedback", str(out / "feedback")])
    rows = {row["submission"]: row for row in csv.DictReader((out / "grades.csv").read_text().splitlines())}
    return {"code": code, "rows": rows, "mark": mark, "outside": outside, "collected": collected,
            "before": before, "out": out}


EXPECTED_ZERO = ["fake_results_file.py", "stack_walk.py", "load_solutions.py", "patch_comparisons.py",
                 "lab_implementation.py", "lab_implementation_moe.py", "escape.py"]


def test_the_folder_is_graded_whole(graded):
    assert graded["code"] == 0
    rows = graded["rows"]
    assert set(rows) == {*EXPECTED_ZERO, "zz_honest.py", "no_marker.py", "not_json.ipynb"}
    assert rows["zz_honest.py"]["score"] == rows["zz_honest.py"]["total"] == "27"
    assert "assignment" in rows["no_marker.py"]["problem"] and rows["no_marker.py"]["score"] == "0"


@pytest.mark.parametrize("name", EXPECTED_ZERO)
def test_a_hostile_submission_earns_nothing(graded, name):
    row = graded["rows"][name]
    assert row["score"] == "0" and int(row["total"]) > 0, row
    feedback = (graded["out"] / "feedback" / f"{name}.txt").read_text()
    assert feedback.rstrip().endswith(f"score: 0/{row['total']}"), feedback


def test_calling_the_lab_says_why(graded):
    feedback = (graded["out"] / "feedback" / "lab_implementation_moe.py.txt").read_text()
    assert "lab.moe.route is off limits in assignment 03_moe" in feedback
    assert "lab.upcycle is off limits" in feedback
    feedback = (graded["out"] / "feedback" / "lab_implementation.py.txt").read_text()
    assert "lab.growth is off limits in assignment 01_fpi" in feedback


def test_limits_hold_and_no_process_is_left(graded):
    feedback = (graded["out"] / "feedback" / "escape.py.txt").read_text()
    assert "timed out after 20 s" in feedback  # fpi_out sleeps
    assert "MemoryError" in feedback or "ended its process" in feedback  # growth_map eats memory
    assert processes_mentioning(graded["mark"]) == []


def test_nothing_is_written_outside_its_own_directory(graded):
    assert list(graded["outside"].iterdir()) == []
    collected = graded["collected"]
    assert {p.name: p.read_bytes() for p in collected.iterdir()} == graded["before"]
    assert not list(Path("/tmp").glob(f"stolen-{graded['mark']}*"))
    assert not list(Path.home().parent.glob(f"stolen-{graded['mark']}*"))


def test_gradebook_outputs(graded):
    results = json.loads((graded["out"] / "results.json").read_text())
    honest = results["zz_honest.py"]
    assert honest["score"] == 27 and len(honest["tests"]) == 13
    assert {t["visibility"] for t in honest["tests"]} == {"visible", "after_published"}
    header = (graded["out"] / "grades.csv").read_text().splitlines()[0]
    assert "01_fpi/q1_growth_map [visible, 1 pt]" in header and "[hidden, 1 pt]" in header
    for name in graded["rows"]:
        assert (graded["out"] / "feedback" / f"{name}.results.json").is_file()
