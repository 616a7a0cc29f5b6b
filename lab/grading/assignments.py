"""Where an assignment's tests live, and which assignment a submission is.

The shipped assignments are in `notebooks/assignments/` of the repository (or of a student release,
`python -m lab assignments release`, which has the same layout without `solutions/`): the student
version `NAME.py` (NAME is `NN_topic`, e.g. `01_fpi`), its visible tests `tests/NAME.py`, and the
instructor's solution `solutions/NAME.py` with hidden tests, if any, in `solutions/hidden/NAME.py`.
None of these is inside the `lab` package, so a wheel of the lab carries none of them. A lab installed
from a wheel finds the visible tests through `$LAB_ASSIGNMENTS` (the release's `notebooks/assignments`).

A student file names its assignment on a `# assignment: NAME` line, so that a renamed copy
(`alice_fpi.py`, or the notebook `jupytext --to ipynb` makes of it) is still graded with the right tests.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lab.errors import LabError
from lab.grading.student import submission_source
from lab import paths

ASSIGNMENTS_DIR = Path(os.environ.get("LAB_ASSIGNMENTS") or paths.ASSIGNMENTS_DIR)
_MARKER = re.compile(r"^#\s*assignment:\s*([A-Za-z0-9_\-]+)\s*$", re.MULTILINE)


def available() -> list[str]:
    return sorted(p.stem for p in (ASSIGNMENTS_DIR / "tests").glob("*.py") if not p.stem.startswith("_"))


def assignment_of(submission: Path) -> str:
    """The assignment a file answers: its `# assignment: NAME` line, else its file name."""
    try:
        found = _MARKER.search(submission_source(submission))
    except OSError as e:
        raise LabError(f"{submission}: cannot read it ({e.strerror})") from None
    except ValueError:  # a .ipynb that is not JSON (UnicodeDecodeError is a ValueError too)
        found = None
    if found:
        return found.group(1)
    if submission.stem in available():
        return submission.stem
    raise LabError(f"{submission.name}: no '# assignment: NAME' line and not named after an assignment "
                   f"(known: {', '.join(available()) or 'none'}); add the line or pass --assignment")


def tests_for(name: str, hidden: bool = False) -> list[Path]:
    """The tests files of assignment `name`: visible tests, and with `hidden` the solutions' hidden ones."""
    visible = ASSIGNMENTS_DIR / "tests" / f"{name}.py"
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name) or not visible.is_file():
        known = ", ".join(available()) or "none"
        raise LabError(f"no assignment named {name!r} (known: {known}); "
                       "name it with --assignment or a '# assignment: NAME' line")
    files = [visible]
    extra = ASSIGNMENTS_DIR / "solutions" / "hidden" / f"{name}.py"
    if hidden and not extra.is_file() and not (ASSIGNMENTS_DIR / "solutions").is_dir():
        raise LabError(f"--hidden: {ASSIGNMENTS_DIR} has no solutions/ (a student release?); grade with the "
                       "repository's notebooks/assignments")
    if hidden and extra.is_file():
        files.append(extra)
    return files


def student_file(name: str) -> Path:
    """The student version of assignment `name`, the file handed out."""
    return ASSIGNMENTS_DIR / f"{name}.py"


def solution_file(name: str) -> Path:
    """The instructor's solution of assignment `name`."""
    return ASSIGNMENTS_DIR / "solutions" / f"{name}.py"
