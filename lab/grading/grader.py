"""Grade a submission: the tests run here, in the trusted process; the student's code runs in a sandbox.

Each question's test runs in this process and calls the student's functions through
`lab.grading.remote.Student`: the arguments go to the student's process, the answers come back as
values, and the test judges them here. The student's process never sees a test, an expected value,
a score or the report, so nothing it does (printing, writing files, patching functions, walking the
stack) can change a verdict. A question has `timeout` seconds for everything the student's code does
in it; past that the process is killed with all it started, the question fails as timed out, and a
fresh process goes on with the next question, so one endless loop costs one question.
"""

from __future__ import annotations

import os
import runpy
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lab.errors import LabError
from lab.grading.questions import Question, declared_names, questions_of
from lab.grading.remote import (NotDone, Student, StudentDied, StudentError, StudentGarbled, StudentProcess,
                                StudentTimedOut, clean_text)
from lab.grading.sandbox import Limits, available_kind, describe
from lab.grading.student import compile_cell, line_of, submission_cells
from lab.grading.student_lab import build_student_lab

# Seconds the student's process may take to import torch and the lab before the submission runs: the
# grader's cost, not the student's, with a generous limit of its own (a loaded machine is slow here).
STARTUP_LIMIT = 300.0


@dataclass
class QuestionResult:
    question: Question
    passed: bool
    message: str

    @property
    def earned(self) -> int:
        return self.question.points if self.passed else 0


@dataclass
class GradeReport:
    submission: Path
    results: list[QuestionResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    assignment: str = ""
    sandbox: str = ""
    seconds: float = 0.0

    @property
    def score(self) -> int:
        return sum(r.earned for r in self.results)

    @property
    def total(self) -> int:
        return sum(r.question.points for r in self.results)

    def part(self, hidden: bool) -> tuple[int, int]:
        chosen = [r for r in self.results if r.question.hidden == hidden]
        return sum(r.earned for r in chosen), sum(r.question.points for r in chosen)

    def format(self) -> str:
        about = f" (assignment {self.assignment})" if self.assignment else ""
        lines = [f"grading {self.submission}{about}"]
        lines += [f"note: {note}" for note in self.notes]
        for number, r in enumerate(self.results, 1):
            mark = "ok  " if r.passed else "FAIL"
            hidden = " (hidden)" if r.question.hidden else ""
            lines.append(f"{mark} Q{number}{hidden} {r.question.title} [{r.earned}/{r.question.points}]")
            if r.message:
                lines.append(f"       {r.message}")
        lines.append(f"score: {self.score}/{self.total}")
        return "\n".join(lines)


def _cannot_run(submission: Path) -> str | None:
    """Why the submission cannot run at all, found without running it: unreadable, or one cell that does not compile.

    Compiling runs nothing of the student's, so this process can do it and spare starting a sandbox.
    """
    try:
        cells = submission_cells(submission)
    except ValueError as e:  # not UTF-8, or a .ipynb that is not JSON
        kind = "a notebook" if submission.suffix == ".ipynb" else "Python"
        return f"your file cannot be read as {kind}: {clean_text(e)}"
    if len(cells) == 1:
        try:
            compile_cell(cells[0], submission.name)
        except SyntaxError as e:
            text = (e.text or "").strip()
            where = line_of(e.lineno or 1, cells)
            return f"your file failed to run: SyntaxError: {e.msg} ({where}{': ' + text if text else ''})"
    return None


def describe_failure(error: BaseException, timeout: float) -> str:
    """The line a failed question shows."""
    if isinstance(error, StudentTimedOut):
        return f"timed out after {timeout:g} s (an endless loop?)"
    if isinstance(error, StudentDied):
        code = error.args[0] if error.args else None
        return (f"your code ended its process in the middle of this question (exit code {code}; out of memory, "
                "or a call to exit()?)")
    if isinstance(error, StudentGarbled):
        return f"your code wrote over the channel between its process and the grader ({error})"
    if isinstance(error, (StudentError, AssertionError)) and str(error):
        return str(error)
    text = clean_text(error)
    return f"your answer could not be checked: {type(error).__name__}{': ' + text if text else ''}"


class _Session:
    """The student's process for one submission, started again after a question kills it."""

    def __init__(self, submission: Path, student_lab: Path, kind: str, limits: Limits, scratch: Path,
                 timeout: float, preload: list[str]):
        self.args = submission, student_lab, kind, limits, preload
        self.scratch, self.timeout, self.starts = scratch, timeout, 0
        self.process: StudentProcess | None = None
        self.loaded = False
        self.cell_errors: list[str] = []

    def launch(self) -> None:
        """Start a process (it imports torch and the lab, then loads the submission) without waiting."""
        self.starts += 1
        self.process = StudentProcess(*self.args, self.scratch / f"run-{self.starts}")
        self.loaded = False

    def start(self) -> str | None:
        """Start a process unless one is on its way, and wait for the submission to load; why it failed, else None."""
        if self.process is None or self.loaded:
            self.launch()
        process = self.process
        self.loaded = True
        try:
            header, _ = process.receive(time.monotonic() + STARTUP_LIMIT)
        except StudentTimedOut:  # nothing of the student's has run yet: the machine is the problem
            return (f"the grader's sandboxed process did not start within {STARTUP_LIMIT:g} s (importing torch); "
                    "the machine is overloaded: grade this file again")
        except (StudentDied, StudentGarbled):
            detail = process.startup_errors()
            return "the grader's sandboxed process could not start" + (f": {detail}" if detail else "")
        if "ready" not in header:
            return "the grader's sandboxed process could not start"
        try:
            header, _ = process.receive(time.monotonic() + self.timeout)
        except StudentTimedOut:
            return (f"your file did not finish running within {self.timeout:g} s (an endless loop at top level? "
                    "put experiments under `if __name__ == \"__main__\":`)")
        except StudentGarbled as e:
            return f"your file wrote over the channel between its process and the grader while loading ({e})"
        except StudentDied as e:
            detail = process.startup_errors()
            return (f"the student's process ended while loading your file (exit code {e.args[0]})"
                    + (f": {detail}" if detail else ""))
        if "load_error" in header:
            return clean_text(header["load_error"])
        if header.get("loaded") is not True:
            return "your file stopped the grader's process while loading"
        errors = header.get("cell_errors", [])
        self.cell_errors = [clean_text(e) for e in errors[:20]] if isinstance(errors, list) else []
        return None

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None


def load_questions(tests: list[Path]) -> list[Question]:
    return [q for path in tests for q in questions_of(runpy.run_path(str(path)))]


def grade(submission: str | os.PathLike, tests: list[str | os.PathLike], *, timeout: float = 60.0,
          sandbox: str = "auto", limits: Limits | None = None, assignment: str = "") -> GradeReport:
    """Run the questions of the `tests` files against `submission`; `timeout` seconds per question (and to load).

    `sandbox` is "auto" (bubblewrap when installed), "bwrap" or "process" (`lab.grading.sandbox`).
    """
    started = time.monotonic()
    submission, tests = Path(submission), [Path(t) for t in tests]
    if not submission.is_file():
        raise LabError(f"{submission}: no such file")
    if submission.suffix not in (".py", ".ipynb"):
        raise LabError(f"{submission}: expected a .py file or a .ipynb notebook")
    kind = available_kind(sandbox)
    report = GradeReport(submission, assignment=assignment, sandbox=kind)
    problem = _cannot_run(submission)
    off_limits = sorted({name for path in tests for name in declared_names(path, "OFF_LIMITS")})
    preload = sorted({name for path in tests for name in declared_names(path, "PRELOAD")})
    with tempfile.TemporaryDirectory(prefix="lab-grade-") as tmp:
        scratch = Path(tmp)
        session = None
        if problem is None:  # start the student's process first: it imports torch while the tests load here
            student_lab = build_student_lab(scratch / "student-lab", off_limits, assignment or "this assignment")
            session = _Session(submission, student_lab, kind, limits or Limits(), scratch, timeout, preload)
            session.launch()
        questions = load_questions(tests)
        try:
            results = _run_questions(questions, session, problem, timeout, report)
        finally:
            if session is not None:
                session.close()
    report.results = results
    if kind != "bwrap":
        report.notes.append(f"graded in a {describe(kind)}")
    report.seconds = time.monotonic() - started
    return report


def _run_questions(questions: list[Question], session: _Session | None, problem: str | None, timeout: float,
                   report: GradeReport) -> list[QuestionResult]:
    if session is None:
        return [QuestionResult(q, False, problem or "") for q in questions]
    results: list[QuestionResult] = []
    for index, q in enumerate(questions):
        if session.process is None or not session.loaded or session.process.exit_code() is not None:
            reason = session.start()
            if reason is not None:
                return results + [QuestionResult(rest, False, reason) for rest in questions[index:]]
            if session.starts == 1:
                report.notes += session.cell_errors
        deadline = time.monotonic() + timeout
        torch.manual_seed(0)
        try:
            session.process.seed(0, deadline)
            q.test(Student(session.process, deadline))
        except BaseException as error:  # noqa: BLE001 - a failed question, whatever failed
            if isinstance(error, KeyboardInterrupt):
                raise
            if isinstance(error, (StudentTimedOut, StudentDied, StudentGarbled)):
                session.close()
            message = describe_failure(error, timeout)
            if isinstance(error, NotDone):
                message = str(error)
            results.append(QuestionResult(q, False, message))
        else:
            results.append(QuestionResult(q, True, ""))
    return results
