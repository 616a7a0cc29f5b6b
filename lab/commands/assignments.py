"""`python -m lab assignments release OUT`: write the student release (handouts, visible tests, the lab).

The release has no solution and no hidden test; it is checked for them before the command succeeds.
`python -m lab assignments list` names the assignments and their points.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 81


def run_release(args: argparse.Namespace) -> None:
    from lab.grading.release import release

    files = release(Path(args.out), force=args.force)
    print(f"wrote the student release to {args.out} ({len(files)} files, no solutions, no hidden tests)")
    print(f"students: pip install -e {args.out}; python -m lab grade notebooks/assignments/NAME.py")


def run_list(args: argparse.Namespace) -> None:
    import runpy

    from lab.grading.assignments import available, tests_for
    from lab.grading.questions import questions_of

    for name in available():
        files = tests_for(name, hidden=True)
        questions = [q for f in files for q in questions_of(runpy.run_path(str(f)))]
        visible = sum(q.points for q in questions if not q.hidden)
        print(f"{name}: {len(questions)} questions, {visible} visible points, "
              f"{sum(q.points for q in questions)} with hidden tests")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("assignments", help="course assignments: list them, write the student release",
                              description="Tools for instructors: `release OUT` writes what students get (the "
                                          "handouts, the visible tests, the lab to install) without solutions or "
                                          "hidden tests; `list` names the assignments and their points.")
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("release", help="write the student release into OUT")
    r.add_argument("out", help="folder to write (must not exist, or be empty)")
    r.add_argument("--force", action="store_true", help="replace OUT if it exists")
    r.set_defaults(func=run_release)
    ls = sub.add_parser("list", help="the assignments and their points")
    ls.set_defaults(func=run_list)
