"""Grade a submission: run each question in a child process under a time limit, never crash.

A question that raises fails with the error's message; one that runs past the limit fails as
"timed out" and the child is killed, and a new child goes on with the next question. A submission
that cannot even be loaded (syntax error, an exception or an endless loop at top level) fails every
question with the reason.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import LabError
from lab.grading.questions import Question, questions_of
from lab.grading.student import submission_source

# Seconds the child may take to import torch, the lab and the tests before the student's file runs.
STARTUP_LIMIT = 120.0


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

    @property
    def score(self) -> int:
        return sum(r.earned for r in self.results)

    @property
    def total(self) -> int:
        return sum(r.question.points for r in self.results)

    def format(self) -> str:
        lines = [f"grading {self.submission}"]
        for number, r in enumerate(self.results, 1):
            mark = "ok  " if r.passed else "FAIL"
            lines.append(f"{mark} Q{number} {r.question.title} [{r.earned}/{r.question.points}]")
            if r.message:
                lines.append(f"       {r.message}")
        lines.append(f"score: {self.score}/{self.total}")
        return "\n".join(lines)


def _read_events(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    # The last line may still be being written by the child: only complete lines count.
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _phase(events: list[dict]) -> str | int:
    """What the child is doing: "starting" (importing the lab and the tests), "loading" (running the
    student's file), or the index of the question under way."""
    starts = [e["start"] for e in events if "start" in e]
    if starts:
        return starts[-1]
    return "loading" if any("ready" in e for e in events) else "starting"


def _run_child(tests: list[Path], submission: Path, first: int, log: Path, timeout: float) -> tuple[list[dict], bool, int]:
    """Run the questions from `first` on in one child; kill it when a phase runs past its limit.

    Returns the child's events, whether it was killed for time, and its exit code.
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "lab.grading.runner", os.pathsep.join(str(t.resolve()) for t in tests),
         str(submission.resolve()), str(first), str(log)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=submission.resolve().parent, start_new_session=True)
    phase, started, timed_out = "starting", time.monotonic(), False
    while child.poll() is None:
        time.sleep(0.05)
        current = _phase(_read_events(log))
        if current != phase:
            phase, started = current, time.monotonic()
        # Importing torch and the lab is the grader's cost, not the student's: a generous limit of its own.
        limit = max(timeout, STARTUP_LIMIT) if phase == "starting" else timeout
        if time.monotonic() - started > limit:
            child.kill()
            child.wait()
            timed_out = True
    return _read_events(log), timed_out, child.returncode


def _cannot_run(submission: Path) -> str | None:
    """Why the submission cannot run at all, found without running it: a syntax error or an unreadable file.

    Compiling runs nothing of the student's, so the parent can do it and spare a child process.
    """
    try:
        compile(submission_source(submission), str(submission), "exec")
    except SyntaxError as e:
        text = (e.text or "").strip()
        return f"your file failed to run: {type(e).__name__}: {e.msg} (your line {e.lineno}{': ' + text if text else ''})"
    except ValueError as e:  # not UTF-8, or a .ipynb that is not JSON
        return f"your file cannot be read as {'a notebook' if submission.suffix == '.ipynb' else 'Python'}: {e}"
    return None


def grade(submission: str | os.PathLike, tests: list[str | os.PathLike], *, timeout: float = 60.0) -> GradeReport:
    """Run the questions of the `tests` files against `submission`; `timeout` seconds per question (and to load).

    Each child process runs questions in order until one hangs or kills it; the next child goes on
    after that question, so one endless loop costs one question, never the rest.
    """
    submission, tests = Path(submission), [Path(t) for t in tests]
    if not submission.is_file():
        raise LabError(f"{submission}: no such file")
    if submission.suffix not in (".py", ".ipynb"):
        raise LabError(f"{submission}: expected a .py file or a .ipynb notebook")
    questions = [q for path in tests for q in questions_of(runpy.run_path(str(path)))]
    problem = _cannot_run(submission)
    if problem:
        return GradeReport(submission, [QuestionResult(q, False, problem) for q in questions])
    results: dict[int, QuestionResult] = {}
    first = 0
    with tempfile.TemporaryDirectory(prefix="lab-grade-") as tmp:
        while first < len(questions):
            log = Path(tmp) / f"events-{first}.jsonl"
            log.touch()
            events, timed_out, returncode = _run_child(tests, submission, first, log, timeout)
            for e in events:
                if "index" in e:
                    results[e["index"]] = QuestionResult(questions[e["index"]], e["passed"], e["message"])
            load_error = next((e["load_error"] for e in events if "load_error" in e), None)
            if load_error or not any("loaded" in e for e in events):
                phase = _phase(events)
                reason = load_error or (
                    f"your file did not finish running within {timeout:g} s (an endless loop at top level? "
                    "put experiments under `if __name__ == \"__main__\":`)" if timed_out and phase == "loading" else
                    f"your file stopped the grader's process while loading (exit code {returncode})"
                    if phase == "loading" else
                    f"the grader's process could not start (exit code {returncode}); is the lab installed?")
                for i in range(first, len(questions)):
                    results[i] = QuestionResult(questions[i], False, reason)
                break
            starts = [e["start"] for e in events if "start" in e]
            last = starts[-1] if starts else first
            if last not in results:  # killed (time limit) or died (e.g. a crash in native code) mid-question
                why = (f"timed out after {timeout:g} s (an endless loop?)" if timed_out
                       else f"the process died while running it (exit code {returncode})")
                results[last] = QuestionResult(questions[last], False, why)
            first = last + 1
    return GradeReport(submission, [results[i] for i in range(len(questions))])
