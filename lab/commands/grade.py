"""`python -m lab grade PATH`: grade a student's assignment file or notebook, question by question.

PATH may also be a folder of collected submissions: each is graded in turn, a summary table follows,
and `--csv FILE`, `--json FILE` and `--feedback DIR` write the gradebook and each student's feedback.
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

        def named(path: Path) -> tuple[str, list[Path]]:
            if args.assignment:
                return args.assignment, tests
            try:
                return assignment_of(path), tests
            except LabError:  # own tests: the assignment is only a label, that of the tests file
                return tests[0].stem, tests

        return named

    def choose(path: Path) -> tuple[str, list[Path]]:
        name = args.assignment or assignment_of(path)
        return name, tests_for(name, hidden=args.hidden)

    return choose


def _output_file(path: str | None, option: str) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if not out.parent.is_dir():
        raise LabError(f"{option} {out}: its folder {out.parent} does not exist")
    if out.is_dir():
        raise LabError(f"{option} {out}: is a folder, give a file name")
    return out


def run(args: argparse.Namespace) -> None:
    from lab.atomic_files import write_text_atomically
    from lab.grading.batch import (Graded, grade_all, gradebook_csv, gradebook_json, gradescope_results,
                                   submissions_in, write_feedback)
    from lab.grading.sandbox import Limits, available_kind

    path = Path(args.path)
    if not path.exists():
        raise LabError(f"{path}: no such file or folder")
    choose = _tests_chooser(args)
    csv_path = _output_file(args.csv, "--csv")
    json_path = _output_file(args.json, "--json")
    available_kind(args.sandbox)  # refuse --sandbox bwrap without bubblewrap before any work
    options = {"timeout": args.timeout, "sandbox": args.sandbox, "limits": Limits(memory_mb=args.memory_mb)}
    if path.is_file():
        from lab.grading import grade

        name, tests = choose(path)  # a single file: a missing marker is the user's error, said at once
        row = Graded(path, name, grade(path, tests, assignment=name, **options))
        rows = [row]
        if json_path is not None:  # one submission: exactly Gradescope's results.json
            import json

            write_text_atomically(json_path, json.dumps(gradescope_results(row), indent=2) + "\n")
    else:
        rows = []
        for row in grade_all(submissions_in(path), choose, **options):
            print(row.format(), end="\n\n", flush=True)
            rows.append(row)
        width = max(len("submission"), *(len(row.submission.name) for row in rows))
        print(f"{'submission':<{width}}  assignment  score")
        for row in rows:
            score = f"{row.score}/{row.total}" if row.report else f"not graded: {row.problem}"
            print(f"{row.submission.name:<{width}}  {row.assignment:<10}  {score}")
        if json_path is not None:
            write_text_atomically(json_path, gradebook_json(rows))
            print(f"wrote {json_path}")
    if csv_path is not None:
        write_text_atomically(csv_path, gradebook_csv(rows))
        print(f"wrote {csv_path}")
    if args.feedback:
        write_feedback(rows, Path(args.feedback))
        print(f"wrote feedback for {len(rows)} submission(s) to {args.feedback}")
    if path.is_file():
        print(rows[0].format())  # last, so that its final line is "score: X/Y"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("grade", help="grade an assignment (a .py file, a notebook, or a folder of them)",
                              description="Runs the assignment's tests against the file: the student's code runs "
                                          "in a sandboxed process of its own, the tests and the verdicts stay in "
                                          "this one. Prints each question's result and a final 'score: X/Y' "
                                          "line. Given a folder, grades every .py and .ipynb in it and prints a "
                                          "summary table.")
    p.add_argument("path", help="the student's .py or .ipynb file, or a folder of submissions")
    p.add_argument("--assignment", help="which assignment, e.g. 01_fpi (default: each file's "
                                        "'# assignment: NAME' line, else its name)")
    p.add_argument("--tests", nargs="+", help="tests file(s) to use instead of the shipped ones")
    p.add_argument("--hidden", action="store_true", help="also run the hidden tests kept with the solutions")
    p.add_argument("--timeout", type=positive_int, default=60, help="seconds per question (default 60)")
    p.add_argument("--memory-mb", type=positive_int, default=4096,
                   help="address-space limit of the student's process in MiB (default 4096)")
    p.add_argument("--sandbox", choices=("auto", "bwrap", "process"), default="auto",
                   help="bwrap: bubblewrap (no network, own filesystem view); process: a plain child process "
                        "with resource limits; auto (default): bwrap when installed")
    p.add_argument("--csv", metavar="FILE", help="write the gradebook: one row per submission, one named column "
                                                 "per question (visible and hidden marked)")
    p.add_argument("--json", metavar="FILE", help="write Gradescope-style results (a results.json for one file; "
                                                  "for a folder, one per submission keyed by file name)")
    p.add_argument("--feedback", metavar="DIR", help="write each student's report (NAME.txt) and results "
                                                     "(NAME.results.json) into DIR")
    p.set_defaults(func=run)
