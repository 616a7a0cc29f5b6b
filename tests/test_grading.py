"""The grader survives broken student code and scores what works."""

from __future__ import annotations

import json
import textwrap

import pytest

from lab.cli import main
from lab.grading import grade

TESTS = '''
import torch
from lab.grading import check_close, question

@question(points=2)
def q_double(student):
    """double() doubles a tensor"""
    x = torch.arange(4.0)
    check_close(student.double(x), 2 * x, "double(arange(4))")

@question(points=3)
def q_square(student):
    """square() squares a number"""
    assert student.square(3) == 9, f"square(3) should be 9, got {student.square(3)}"
'''

GOOD = "def double(x):\n    return 2 * x\n\ndef square(x):\n    return x * x\n"


@pytest.fixture
def tests_file(tmp_path):
    path = tmp_path / "tests_toy.py"
    path.write_text(TESTS)
    return path


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_full_marks(tmp_path, tests_file):
    report = grade(write(tmp_path, "good.py", GOOD), [tests_file])
    assert (report.score, report.total) == (5, 5)
    assert report.format().endswith("score: 5/5")


def test_wrong_answer_and_exception_are_failed_questions_with_messages(tmp_path, tests_file):
    source = "def double(x):\n    return x\n\ndef square(x):\n    raise ValueError('not yet')\n"
    report = grade(write(tmp_path, "wrong.py", source), [tests_file])
    assert report.score == 0
    assert "double(arange(4))" in report.results[0].message
    assert "ValueError: not yet" in report.results[1].message and "your line 5" in report.results[1].message


def test_endless_loop_in_one_question_fails_only_that_question(tmp_path, tests_file):
    source = "def double(x):\n    while True:\n        pass\n\ndef square(x):\n    return x * x\n"
    report = grade(write(tmp_path, "loop.py", source), [tests_file], timeout=3)
    assert [r.passed for r in report.results] == [False, True]
    assert "timed out" in report.results[0].message
    assert report.score == 3


@pytest.mark.parametrize("source, reason", [
    ("def double(x) return x\n", "SyntaxError"),
    ("while True:\n    pass\n", "did not finish running"),
    ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
])
def test_a_file_that_does_not_load_fails_every_question(tmp_path, tests_file, source, reason):
    report = grade(write(tmp_path, "broken.py", source), [tests_file], timeout=3)
    assert report.score == 0 and report.total == 5
    assert all(reason in r.message for r in report.results)


def test_notebook_submission(tmp_path, tests_file):
    cells = [{"cell_type": "markdown", "source": "# answers"},
             {"cell_type": "code", "source": ["%matplotlib inline\n", "def double(x):\n", "    return 2 * x\n"]},
             {"cell_type": "code", "source": "def square(x):\n    return x ** 2\n"}]
    path = tmp_path / "answers.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert grade(path, [tests_file]).score == 5


def test_cli_prints_score_and_refuses_bad_paths(tmp_path, tests_file, capsys):
    good = write(tmp_path, "good.py", GOOD)
    assert main(["grade", str(good), "--tests", str(tests_file)]) == 0
    assert capsys.readouterr().out.strip().endswith("score: 5/5")
    assert main(["grade", str(tmp_path / "missing.py")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["grade", str(good), "--assignment", "nonexistent"]) == 2
    assert "no assignment named 'nonexistent'" in capsys.readouterr().err


def test_a_folder_of_submissions_is_graded_into_a_table_and_a_csv(tmp_path, tests_file, capsys):
    folder = tmp_path / "collected"
    folder.mkdir()
    write(folder, "alice.py", GOOD)
    write(folder, "bob.py", "def double(x):\n    return 2 * x\n\ndef square(x) return 0\n")
    write(folder, "_notes.py", "not a submission")
    csv_path = tmp_path / "grades.csv"
    assert main(["grade", str(folder), "--tests", str(tests_file), "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "alice.py" in out and "5/5" in out and "bob.py" in out and "0/5" in out and "_notes" not in out
    assert csv_path.read_text().splitlines() == [
        "submission,assignment,score,total,Q1,Q2", "alice.py,alice,5,5,2,3", "bob.py,bob,0,5,0,0"]
    assert main(["grade", str(folder), "--tests", str(tests_file), "--csv", str(tmp_path / "no" / "g.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["grade", str(empty), "--tests", str(tests_file)]) == 2
    assert "no .py or .ipynb submissions" in capsys.readouterr().err


def test_nan_is_never_close():
    import torch

    from lab.grading import check_close

    with pytest.raises(AssertionError, match="NaN"):
        check_close(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0]), "x")
