"""Grade a folder of submissions and write the gradebook as CSV.

A folder holds one file per student (`.py` or `.ipynb`, as collected). Each file is graded on its own
(`lab.grading.grade`), so one broken submission costs only its own marks. The CSV has one row per
submission: its file, its assignment, the score, the total, then the points of each question.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable, Iterator

from lab.errors import LabError
from lab.grading.grader import GradeReport, grade

SUBMISSION_SUFFIXES = (".py", ".ipynb")


def submissions_in(folder: Path) -> list[Path]:
    """The gradable files directly in `folder`, sorted by name (hidden and `_` files left out)."""
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix in SUBMISSION_SUFFIXES and not p.name.startswith((".", "_")))
    if not files:
        raise LabError(f"{folder}: no .py or .ipynb submissions in it")
    return files


def grade_all(submissions: list[Path], tests_of: Callable[[Path], tuple[str, list[Path]]], *,
              timeout: float = 60.0) -> Iterator[tuple[str, GradeReport]]:
    """(assignment, report) for each submission, in order; `tests_of(file)` names its assignment and tests.

    The tests of every file are looked up before any grading, so a file of an unknown assignment
    stops the run before the first minute is spent.
    """
    plans = [(path, *tests_of(path)) for path in submissions]
    for path, assignment, tests in plans:
        yield assignment, grade(path, tests, timeout=timeout)


def gradebook_csv(rows: list[tuple[str, GradeReport]]) -> str:
    """The CSV text of graded submissions: submission, assignment, score, total, Q1, Q2... (points earned)."""
    width = max(len(report.results) for _, report in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["submission", "assignment", "score", "total", *(f"Q{i}" for i in range(1, width + 1))])
    for assignment, report in rows:
        writer.writerow([report.submission.name, assignment, report.score, report.total,
                         *(r.earned for r in report.results)])
    return out.getvalue()


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary sibling, then rename it over `path`: never a half-written file."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
