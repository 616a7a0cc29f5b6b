"""Grade a folder of submissions into a gradebook: CSV, Gradescope-style JSON and one feedback file per student.

A folder holds one file per student (`.py` or `.ipynb`, as collected). Each file is graded on its own
and nothing one file does can stop the others: a file with no assignment marker, one the grader
cannot read, even one that breaks the grader itself, gets a row with the reason and zero points, and
the run goes on. The CSV has one row per submission and named columns: the scores (all, visible,
hidden), the problem if any, then one column per question, named by assignment, question id, whether
it is hidden, its points and its title.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lab.atomic_files import write_text_atomically
from lab.errors import LabError
from lab.grading.grader import GradeReport, grade
from lab.grading.remote import clean_text

SUBMISSION_SUFFIXES = (".py", ".ipynb")


@dataclass
class Graded:
    """One collected file: its report, or the problem that kept it from being graded."""

    submission: Path
    assignment: str
    report: GradeReport | None
    problem: str = ""

    @property
    def score(self) -> int:
        return self.report.score if self.report else 0

    @property
    def total(self) -> int:
        return self.report.total if self.report else 0

    def format(self) -> str:
        if self.report is not None:
            return self.report.format()
        return f"grading {self.submission}\nnot graded: {self.problem}\nscore: 0/0"


def submissions_in(folder: Path) -> list[Path]:
    """The gradable files directly in `folder`, sorted by name (hidden and `_` files left out)."""
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix in SUBMISSION_SUFFIXES and not p.name.startswith((".", "_")))
    if not files:
        raise LabError(f"{folder}: no .py or .ipynb submissions in it")
    return files


def grade_all(submissions: list[Path], tests_of: Callable[[Path], tuple[str, list[Path]]],
              **grade_options) -> Iterator[Graded]:
    """A `Graded` for each submission, in order; `tests_of(file)` names its assignment and tests files."""
    for path in submissions:
        try:
            assignment, tests = tests_of(path)
        except LabError as e:
            yield Graded(path, "", None, clean_text(e))
            continue
        try:
            yield Graded(path, assignment, grade(path, tests, assignment=assignment, **grade_options))
        except Exception as e:  # noqa: BLE001 - one file must never stop the folder
            yield Graded(path, assignment, None, clean_text(f"the grader failed on this file: {type(e).__name__}: {e}"))


def _columns(rows: list[Graded]) -> list[tuple[str, str]]:
    """(assignment, question name) of every question seen, in order of first appearance."""
    seen: dict[tuple[str, str], None] = {}
    for row in rows:
        for r in row.report.results if row.report else []:
            seen.setdefault((row.assignment, r.question.name), None)
    return list(seen)


def gradebook_csv(rows: list[Graded]) -> str:
    """The CSV text: one row per submission, one named column per question (points earned; blank: not asked)."""
    columns = _columns(rows)
    titles: dict[tuple[str, str], str] = {}
    for row in rows:
        for r in row.report.results if row.report else []:
            q = r.question
            kind = "hidden" if q.hidden else "visible"
            titles[(row.assignment, q.name)] = f"{row.assignment}/{q.name} [{kind}, {q.points} pt] {q.title}"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["submission", "assignment", "score", "total", "visible_score", "visible_total", "hidden_score",
                     "hidden_total", "problem", *(titles[c] for c in columns)])
    for row in rows:
        earned = {(row.assignment, r.question.name): r.earned for r in (row.report.results if row.report else [])}
        visible = row.report.part(hidden=False) if row.report else (0, 0)
        hidden = row.report.part(hidden=True) if row.report else (0, 0)
        writer.writerow([row.submission.name, row.assignment, row.score, row.total, *visible, *hidden, row.problem,
                         *(earned.get(c, "") for c in columns)])
    return out.getvalue()


def gradescope_results(row: Graded) -> dict:
    """A Gradescope autograder `results.json` for one submission."""
    if row.report is None:
        return {"score": 0, "output": f"Not graded: {row.problem}", "tests": []}
    tests = []
    for number, r in enumerate(row.report.results, 1):
        q = r.question
        tests.append({"name": f"Q{number} {q.title}", "number": str(number), "score": r.earned, "max_score": q.points,
                      "status": "passed" if r.passed else "failed", "output": r.message,
                      "visibility": "after_published" if q.hidden else "visible"})
    notes = "\n".join(row.report.notes)
    return {"score": row.score, "output": notes, "tests": tests}


def gradebook_json(rows: list[Graded]) -> str:
    """Every submission's Gradescope-style results, keyed by file name."""
    return json.dumps({row.submission.name: {"assignment": row.assignment, "total": row.total,
                                             **gradescope_results(row)} for row in rows}, indent=2) + "\n"


def write_feedback(rows: list[Graded], folder: Path) -> None:
    """`folder/NAME.txt` (the report) and `folder/NAME.results.json` (Gradescope) for every submission NAME."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        stem = row.submission.name
        write_text_atomically(folder / f"{stem}.txt", row.format() + "\n")
        write_text_atomically(folder / f"{stem}.results.json", json.dumps(gradescope_results(row), indent=2) + "\n")
