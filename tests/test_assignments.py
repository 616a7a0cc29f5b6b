"""Every shipped assignment: the solution scores full marks, the handout does not, broken copies are graded.

Each test grades a real file through `lab.grading.grade` (a child process per submission), so these
are the checks an instructor relies on before handing an assignment out.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from lab.grading import grade
from lab.grading import assignments
from lab.grading.assignments import assignment_of, available, solution_file, student_file

NAMES = available()


def test_at_least_three_assignments_each_with_solution_and_hidden_tests():
    assert len(NAMES) >= 3, NAMES
    for name in NAMES:
        assert solution_file(name).is_file(), f"{name}: no solution"
        assert len(assignments.tests_for(name, hidden=True)) == 2, f"{name}: no hidden tests in solutions/hidden/"
        assert f"# assignment: {name}" in student_file(name).read_text(), f"{name}: the handout lacks its marker"


@pytest.mark.parametrize("name", NAMES)
def test_solution_scores_full_marks_with_the_hidden_tests(name):
    report = grade(solution_file(name), assignments.tests_for(name, hidden=True))
    assert report.score == report.total > 0, report.format()
    assert report.format().endswith(f"score: {report.total}/{report.total}")


@pytest.mark.parametrize("name", NAMES)
def test_untouched_handout_scores_less_and_says_what_is_left(name):
    report = grade(student_file(name), assignments.tests_for(name))
    assert report.score < report.total, report.format()
    failed = [r for r in report.results if not r.passed]
    assert failed and all("not done yet" in r.message for r in failed), report.format()


def stubbed_functions(name: str) -> list[ast.FunctionDef]:
    """The functions of the handout a student fills in (those whose body raises NotImplementedError)."""
    tree = ast.parse(student_file(name).read_text())
    return [node for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(isinstance(n, ast.Raise) and "NotImplementedError" in ast.unparse(n) for n in ast.walk(node))]


def broken_copy(tmp_path: Path, name: str, extra: str) -> Path:
    path = tmp_path / f"{name}_broken.py"
    path.write_text(solution_file(name).read_text() + "\n\n" + extra)
    return path


@pytest.mark.parametrize("name", NAMES)
def test_a_syntax_error_costs_the_questions_of_its_cell_and_says_where(tmp_path, name):
    last = stubbed_functions(name)[-1]
    source = solution_file(name).read_text()
    broken = source.replace(f"def {last.name}(", f"oops = (:\ndef {last.name}(", 1)
    path = tmp_path / f"{name}_broken.py"
    path.write_text(broken)
    report = grade(path, assignments.tests_for(name), timeout=10)
    failed = [r for r in report.results if not r.passed]
    line = broken[:broken.index("oops = (:")].count("\n") + 1
    assert failed and all(f"defines no function {last.name}()" in r.message and "SyntaxError" in r.message
                          and f"your line {line}" in r.message for r in failed), report.format()
    assert 0 < report.score < report.total, report.format()


@pytest.mark.parametrize("name", NAMES)
def test_an_endless_loop_at_top_level_fails_every_question(tmp_path, name):
    report = grade(broken_copy(tmp_path, name, "while True:\n    pass\n"), assignments.tests_for(name), timeout=2)
    assert report.score == 0 and report.total > 0
    assert all("did not finish running within 2 s" in r.message for r in report.results), report.format()


@pytest.mark.parametrize("name", NAMES)
def test_an_endless_loop_in_one_answer_costs_only_its_questions(tmp_path, name):
    last = stubbed_functions(name)[-1]  # nothing else in the file calls the last answer
    hang = f"def {last.name}(*args, **kwargs):\n    while True:\n        pass\n"
    report = grade(broken_copy(tmp_path, name, hang), assignments.tests_for(name), timeout=3)
    hung = [r for r in report.results if not r.passed]
    assert hung and all("timed out after 3 s" in r.message for r in hung), report.format()
    assert report.results[0].passed and 0 < report.score < report.total, report.format()


def replaced(name: str, function: str, new_source: str, tmp_path: Path) -> Path:
    """A copy of the solution of `name` with `function` replaced by `new_source` (a wrong answer)."""
    source = solution_file(name).read_text()
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    lines = source.splitlines(keepends=True)
    start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
    path = tmp_path / f"{name}_{function}_wrong.py"
    path.write_text("".join(lines[:start]) + new_source + "".join(lines[node.end_lineno:]))
    return path


@pytest.mark.parametrize("name, function, wrong", [
    ("01_fpi", "width_growth_is_exact", "def width_growth_is_exact(old_dim, new_dim):\n"
                                        "    return new_dim in (old_dim, 2 * old_dim)\n"),
    ("02_depth", "grow_depth", "import copy\n\n@torch.no_grad()\ndef grow_depth(model, order):\n"
                               "    grown = copy.deepcopy(model)\n"
                               "    grown.layers = torch.nn.ModuleList(copy.deepcopy(model.layers[o]) for o in order)\n"
                               "    grown.config = model.config.replace(n_layers=len(order))\n"
                               "    return grown\n"),
])
def test_the_hidden_tests_catch_what_the_visible_ones_miss(tmp_path, name, function, wrong):
    path = replaced(name, function, wrong, tmp_path)
    visible = grade(path, assignments.tests_for(name))
    assert visible.score == visible.total, visible.format()  # the bug passes every visible question...
    report = grade(path, assignments.tests_for(name, hidden=True))
    failed = [r for r in report.results if not r.passed]
    assert failed and all(r.question.hidden for r in failed), report.format()  # ...and a hidden one catches it
    if function == "grow_depth":
        assert "KV cache" in failed[0].message and "[0, 0, 1, 1]" in failed[0].message, failed[0].message


def test_correct_answers_written_differently_get_full_marks():
    path = Path(__file__).parent / "grading_fixtures" / "alternative_01_fpi.py"
    report = grade(path, assignments.tests_for("01_fpi", hidden=True))
    assert report.score == report.total, report.format()


def test_a_handout_converted_to_a_notebook_is_graded_like_the_file(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    name = NAMES[0]
    notebook = tmp_path / "alice.ipynb"
    jupytext.write(jupytext.read(solution_file(name)), notebook)
    assert json.loads(notebook.read_text())["cells"], "jupytext wrote no cells"
    assert assignment_of(notebook) == name  # the marker survives the conversion
    report = grade(notebook, assignments.tests_for(name))
    assert report.score == report.total, report.format()
