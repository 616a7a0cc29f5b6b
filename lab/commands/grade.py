"""`python -m lab grade PATH`: grade a student's assignment file or notebook, question by question.

PATH may also be a folder of collected submissions: each is graded in turn, a summary table follows,
and `--csv FILE` writes the gradebook.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.commands import positive_int
from lab.errors import LabError

ORDER = 80


def _tests_chooser(args: argparse.Namespace):
    """A function file -> (assignment, tests files), checking the --tests files once, up front."""
    from lab.grading.assignments import assignment_of, tests_for

    if args.tests:
        tests = [Path(t) for t in args.tests]
        missing = [t for t in tests if not t.is_file()]
        if missing:
            raise LabError(f"{missing[0]}: no such tests file")
        return lambda path: (args.assignment or assignment_of(path), tests)

    def choose(path: Path) -> tuple[str, list[Path]]:
        name = args.assignment or assignment_of(path)
        return name, tests_for(name, hidden=args.hidden)

    return choose


def _check_csv(path: str | None) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if not out.parent.is_dir():
        raise LabError(f"--csv {out}: its folder {out.parent} does not exist")
    if out.is_dir():
        raise LabError(f"--csv {out}: is a folder, give a file name")
    return out


def run(args: argparse.Namespace) -> None:
    from lab.grading import grade
    from lab.grading.batch import gradebook_csv, grade_all, submissions_in, write_text_atomically

    path = Path(args.path)
    if not path.exists():
        raise LabError(f"{path}: no such file or folder")
    choose = _tests_chooser(args)
    csv_path = _check_csv(args.csv)
    if path.is_file():
        if csv_path is None:
            _, tests = choose(path)
            print(grade(path, tests, timeout=args.timeout).format())
            return
        files = [path]
    else:
        files = submissions_in(path)
    rows = []
    for assignment, report in grade_all(files, choose, timeout=args.timeout):
        print(report.format(), end="\n\n", flush=True)
        rows.append((assignment, report))
    width = max(len("submission"), *(len(report.submission.name) for _, report in rows))
    print(f"{'submission':<{width}}  assignment  score")
    for assignment, report in rows:
        print(f"{report.submission.name:<{width}}  {assignment:<10}  {report.score}/{report.total}")
    if csv_path is not None:
        write_text_atomically(csv_path, gradebook_csv(rows))
        print(f"wrote {csv_path}")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("grade", help="grade an assignment (a .py file, a notebook, or a folder of them)",
                              description="Runs the assignment's tests against the file in a separate process, "
                                          "with a time limit per question, and prints each question's result "
                                          "and a final 'score: X/Y' line. Given a folder, grades every .py and "
                                          ".ipynb in it and prints a summary table.")
    p.add_argument("path", help="the student's .py or .ipynb file, or a folder of submissions")
    p.add_argument("--assignment", help="which assignment, e.g. 01_fpi (default: each file's "
                                        "'# assignment: NAME' line, else its name)")
    p.add_argument("--tests", nargs="+", help="tests file(s) to use instead of the shipped ones")
    p.add_argument("--hidden", action="store_true", help="also run the hidden tests kept with the solutions")
    p.add_argument("--timeout", type=positive_int, default=60, help="seconds per question (default 60)")
    p.add_argument("--csv", metavar="FILE", help="also write the scores (one row per submission, one column "
                                                 "per question) to this CSV file")
    p.set_defaults(func=run)
