"""The child process of the grader: `python -m lab.grading.runner TESTS SUBMISSION FIRST RESULTS`.

TESTS is one tests file, or several joined by `os.pathsep` (visible tests, then hidden ones).

Loads the tests and the submission, then runs the questions from index FIRST on, appending one JSON
line per event to RESULTS (never stdout, which the student's code may print to): `{"ready": true}`
once the lab and the tests are imported (the grader's own start-up, not timed against the student),
`{"loaded": true}` once the submission ran, `{"start": i}` before question i, then its result. The
parent watches the file and enforces the time limits.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import traceback
from pathlib import Path

from lab.grading.questions import questions_of
from lab.grading.student import load_submission


def describe_failure(error: BaseException, submission: Path) -> str:
    """One line a student can act on: the assertion's message, or the exception and where in their file."""
    if isinstance(error, AssertionError) and str(error):
        return str(error)
    if type(error) is NotImplementedError:  # an untouched stub: say so plainly, without a traceback
        stub = str(error).strip()
        return f"not done yet: {stub + '() ' if stub else ''}still raises NotImplementedError"
    where = ""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if Path(frame.filename) == submission:
            where = f" (your line {frame.lineno}: {frame.line})" if frame.line else f" (your line {frame.lineno})"
            break
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}{': ' + text if text else ''}{where}"


def main(tests: str, submission: str, first: str, results: str) -> None:
    import torch

    # The questions use tiny tensors: one thread is as fast, and it keeps grading steady when several
    # graders (a folder of submissions, a CI machine) share the cores; spinning thread pools do not.
    torch.set_num_threads(1)
    submission_path = Path(submission).resolve()
    questions = [q for path in tests.split(os.pathsep) for q in questions_of(runpy.run_path(path))]
    with open(results, "a", encoding="utf-8") as out:
        def emit(record: dict) -> None:
            out.write(json.dumps(record) + "\n")
            out.flush()

        emit({"ready": True})
        try:
            student = load_submission(submission_path)
        except BaseException as error:  # noqa: BLE001 - anything the student's file does is theirs
            emit({"load_error": f"your file failed to run: {describe_failure(error, submission_path)}"})
            return
        emit({"loaded": True})
        for index in range(int(first), len(questions)):
            emit({"start": index})
            torch.manual_seed(0)
            try:
                questions[index].test(student)
            except BaseException as error:  # noqa: BLE001
                emit({"index": index, "passed": False, "message": describe_failure(error, submission_path)})
            else:
                emit({"index": index, "passed": True, "message": ""})


if __name__ == "__main__":
    main(*sys.argv[1:5])
