"""`python -m lab grade PATH`: grade a student's assignment file or notebook, question by question."""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.commands import positive_int
from lab.errors import LabError

ORDER = 80


def run(args: argparse.Namespace) -> None:
    from lab.grading import grade
    from lab.grading.assignments import assignment_of, tests_for

    path = Path(args.path)
    if not path.is_file():
        raise LabError(f"{path}: no such file")
    if args.tests:
        tests = [Path(t) for t in args.tests]
        missing = [t for t in tests if not t.is_file()]
        if missing:
            raise LabError(f"{missing[0]}: no such tests file")
    else:
        tests = tests_for(args.assignment or assignment_of(path), hidden=args.hidden)
    print(grade(path, tests, timeout=args.timeout).format())


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("grade", help="grade an assignment (a .py file or a notebook)",
                              description="Runs the assignment's tests against the file in a separate process, "
                                          "with a time limit per question, and prints each question's result "
                                          "and a final 'score: X/Y' line.")
    p.add_argument("path", help="the student's .py or .ipynb file")
    p.add_argument("--assignment", help="which assignment (default: the file's '# assignment: NAME' line, "
                                        "else its name)")
    p.add_argument("--tests", nargs="+", help="tests file(s) to use instead of the shipped ones")
    p.add_argument("--hidden", action="store_true", help="also run the hidden tests kept with the solutions")
    p.add_argument("--timeout", type=positive_int, default=60, help="seconds per question (default 60)")
    p.set_defaults(func=run)
