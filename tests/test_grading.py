"""The grader survives broken student code and scores what works."""

from __future__ import annotations

import csv
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


def test_without_bubblewrap_the_verdicts_are_the_same_and_the_report_says_so(tmp_path, tests_file):
    source = GOOD.replace("return x * x", "return x + x")
    report = grade(write(tmp_path, "plain.py", source), [tests_file], sandbox="process")
    assert (report.score, report.total) == (2, 5)
    assert "square(3) should be 9, got 6" in report.results[1].message
    assert any("plain child process" in note for note in report.notes)


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
    rows = list(csv.reader(csv_path.read_text().splitlines()))
    assert rows[0] == ["submission", "assignment", "score", "total", "visible_score", "visible_total", "hidden_score",
                       "hidden_total", "problem", "tests_toy/q_double [visible, 2 pt] double() doubles a tensor",
                       "tests_toy/q_square [visible, 3 pt] square() squares a number"]
    assert rows[1:] == [["alice.py", "tests_toy", "5", "5", "5", "5", "0", "0", "", "2", "3"],
                        ["bob.py", "tests_toy", "0", "5", "0", "5", "0", "0", "", "0", "0"]]
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


def test_feedback_shows_the_first_difference_for_tensors_lists_and_scalars():
    import torch

    from lab.grading import check_close, check_equal

    expected = torch.zeros(3, 4)
    actual = expected.clone()
    actual[1, 2], actual[2, 0] = 0.5, 7.0
    with pytest.raises(AssertionError, match=r"first difference at index \[1, 2\]: expected 0, got 0.5; "
                                             r"2 of 12 values differ, largest gap 7"):
        check_close(actual, expected, "w")
    with pytest.raises(AssertionError, match=r"x: expected 1.25, got 1.5$"):
        check_close(torch.tensor(1.5), torch.tensor(1.25), "x")
    with pytest.raises(AssertionError, match=r"expected a tensor, got float \(1.5\)"):
        check_close(1.5, torch.tensor(1.25), "x")
    with pytest.raises(AssertionError, match=r"first difference at index 2: expected 2, got 0"):
        check_equal(torch.tensor([0, 1, 0]), [0, 1, 2, 0], "g")
    with pytest.raises(AssertionError, match=r"expected 4 items, got 3"):
        check_equal([0, 1, 2], [0, 1, 2, 0], "g")


NOTEBOOK_CELLS = ["import torch\n", "def double(x):\n    return 2 * x\n", "scratch = undefined_name + 1\n",
                  "def square(x):\n    return x * x\n"]


def test_a_broken_scratch_cell_costs_nothing_and_is_reported_by_cell(tmp_path, tests_file):
    cells = [{"cell_type": "code", "source": source} for source in NOTEBOOK_CELLS]
    notebook = tmp_path / "answers.ipynb"
    notebook.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    report = grade(notebook, [tests_file])
    assert report.score == 5, report.format()
    assert any("cell 3 failed to run: NameError" in note and "code cell 3, line 1: scratch = undefined_name + 1" in note
               for note in report.notes), report.format()
    # the same code as a jupytext .py (cells marked `# %%`) earns the same grade
    py = tmp_path / "answers.py"
    py.write_text("".join(f"# %%\n{source}\n" for source in NOTEBOOK_CELLS))
    same = grade(py, [tests_file])
    assert same.score == report.score and any("your line 9 (cell 3): scratch = undefined_name + 1" in note for note in same.notes), same.format()


def test_an_error_inside_an_answer_points_to_the_notebook_cell(tmp_path, tests_file):
    cells = [{"cell_type": "code", "source": "def double(x):\n    return x\n"},
             {"cell_type": "code", "source": "def square(x):\n    y = x\n    raise ValueError('no')\n"}]
    notebook = tmp_path / "answers.ipynb"
    notebook.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    report = grade(notebook, [tests_file])
    assert "first difference at index [1]: expected 2, got 1" in report.results[0].message, report.format()
    assert "ValueError: no (code cell 2, line 3: raise ValueError('no'))" == report.results[1].message


def test_printing_and_garbage_on_every_descriptor_change_nothing(tmp_path, tests_file):
    source = GOOD + ("import os, sys\nprint('score: 99/99')\nsys.stderr.write('ok  Q1\\n')\n"
                     "def double(x):\n    print('{\"index\": 0, \"passed\": true}')\n    return 2 * x\n")
    report = grade(write(tmp_path, "noisy.py", source), [tests_file])
    assert (report.score, report.total) == (5, 5)
    assert "99/99" not in report.format()


def test_a_student_message_cannot_forge_report_lines(tmp_path, tests_file):
    source = GOOD.replace("return x * x", "raise ValueError('x\\nok   Q2 square [3/3]\\nscore: 5/5')")
    report = grade(write(tmp_path, "forge.py", source), [tests_file])
    assert report.format().splitlines()[-1] == "score: 2/5"
    assert sum(line.startswith("ok") for line in report.format().splitlines()) == 1


def test_garbled_tensors_from_the_student_side_are_refused():
    import torch

    from lab.grading.lab_objects import decode_object
    from lab.grading.wire import Decoder, Encoder, WireError

    encoder = Encoder()
    tree = encoder.value(torch.arange(4.0))
    blob = encoder.blob()
    tree["tensor"]["size"] = [1000]  # reaches past its storage: would read the grader's memory
    with pytest.raises(WireError, match="past its storage"):
        Decoder.from_blob(blob).value(tree)
    with pytest.raises(WireError, match="unknown kind"):
        Decoder.from_blob(blob, decode_object).value({"pickle": "..."})
    huge = {"object": {"kind": "MLP", "dim": 1 << 20, "ffn_dim": 1 << 20, "state": {}, "training": False}}
    with pytest.raises(WireError, match="larger than the grader accepts"):
        Decoder.from_blob(blob, decode_object).value(huge)
