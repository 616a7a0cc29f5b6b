"""The student release (`python -m lab assignments release OUT`) and the wheel built from it hold no solution.

The release has the repository's layout, so the wheel built from it is the one students would
install; pyproject's package discovery (`lab*`) keeps `notebooks/` out of any wheel anyway.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from lab.cli import main
from lab.grading.assignments import available
from lab.grading.release import files_containing, solution_bodies

BODIES = {f"{name}.{function}": body for name in available() for function, body in solution_bodies(name).items()}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "course"
    assert main(["assignments", "release", str(out)]) == 0
    return out


def test_most_solution_bodies_are_distinctive_enough_to_look_for():
    every = sum(len(solution_bodies(name, distinctive=False)) for name in available())
    assert len(BODIES) >= every - 4, sorted(BODIES)  # only one-liners that are the lab's own code are left out


def test_the_release_has_handouts_and_visible_tests_only(released):
    handouts = released / "notebooks" / "assignments"
    for name in available():
        assert (handouts / f"{name}.py").is_file() and (handouts / "tests" / f"{name}.py").is_file()
    assert not (handouts / "solutions").exists() and not (handouts / "INSTRUCTORS.md").exists()
    assert not [p for p in released.rglob("*") if "hidden" in p.parts or "solutions" in p.parts]
    assert files_containing(released, BODIES) == []


def test_the_release_refuses_to_overwrite(released, capsys):
    assert main(["assignments", "release", str(released)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_the_wheel_students_install_holds_no_solution(released, tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheels"), str(released)], check=True, cwd=tmp_path)
    wheel = next((tmp_path / "wheels").glob("*.whl"))
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(unpacked)
    assert any(n.startswith("lab/grading/") for n in names)
    assert not [n for n in names if "solutions" in n or "hidden" in n or n.startswith("notebooks/")]
    assert files_containing(unpacked, BODIES) == []


def test_a_release_grades_its_handouts(released, tmp_path):
    """The grader of a release finds the visible tests there (LAB_ASSIGNMENTS for a copy elsewhere)."""
    result = subprocess.run([sys.executable, "-m", "lab", "grade", str(released / "notebooks" / "assignments" / "03_moe.py"),
                             "--timeout", "30"], capture_output=True, text=True, cwd=released,
                            env={"PATH": "/usr/bin:/bin", "LAB_ASSIGNMENTS": str(released / "notebooks" / "assignments"),
                                 "PYTHONPATH": str(released)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("score: 0/17"), result.stdout
