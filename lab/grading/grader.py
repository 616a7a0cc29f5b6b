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


def grade(submission: str | os.PathLike, tests: list[str | os.PathLike], *, timeout: float = 60.0) -> GradeReport:
    """Run the questions of the `tests` files against `submission`; `timeout` seconds per question (and to load)."""
    submission, tests = Path(submission), [Path(t) for t in tests]
    if not submission.is_file():
        raise LabError(f"{submission}: no such file")
    if submission.suffix not in (".py", ".ipynb"):
        raise LabError(f"{submission}: expected a .py file or a .ipynb notebook")
    questions = [q for path in tests for q in questions_of(runpy.run_path(str(path)))]
    report = GradeReport(submission)
    results: dict[int, QuestionResult] = {}
    first = 0
    with tempfile.TemporaryDirectory(prefix="lab-grade-") as tmp:
        while first < len(questions):
            log = Path(tmp) / f"events-{first}.jsonl"
            log.touch()
            child = subprocess.Popen(
                [sys.executable, "-m", "lab.grading.runner", os.pathsep.join(str(t.resolve()) for t in tests),
                 str(submission.resolve()), str(first), str(log)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd=submission.resolve().parent, start_new_session=True)
            started, running = time.monotonic(), None  # running: the question under way, None while loading
            timed_out = False
            while child.poll() is None:
                time.sleep(0.05)
                events = _read_events(log)
                starts = [e["start"] for e in events if "start" in e]
                current = starts[-1] if starts else None
                if current != running:
                    running, started = current, time.monotonic()
                if time.monotonic() - started > timeout:
                    child.kill()
                    child.wait()
                    timed_out = True
            events = _read_events(log)
            for e in events:
                if "index" in e:
                    results[e["index"]] = QuestionResult(questions[e["index"]], e["passed"], e["message"])
            load_error = next((e["load_error"] for e in events if "load_error" in e), None)
            loaded = any("loaded" in e for e in events)
            if load_error or not loaded:
                reason = load_error or (f"your file did not finish running within {timeout:g} s "
                                        "(an endless loop at top level?)" if timed_out else
                                        f"the grader's child process died (exit code {child.returncode})")
                for i in range(first, len(questions)):
                    results[i] = QuestionResult(questions[i], False, reason)
                break
            starts = [e["start"] for e in events if "start" in e]
            last = starts[-1] if starts else first
            if last not in results:  # killed (time limit) or died (e.g. a crash in native code) mid-question
                why = (f"timed out after {timeout:g} s (an endless loop?)" if timed_out
                       else f"the process died while running it (exit code {child.returncode})")
                results[last] = QuestionResult(questions[last], False, why)
            first = last + 1
    report.results = [results[i] for i in range(len(questions))]
    return report
