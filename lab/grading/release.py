"""The student release: what students get, with no solution and no hidden test in it.

`python -m lab assignments release OUT` writes OUT with the repository's layout, so that the grader
finds the visible tests the same way there:

  OUT/README.md                       how to install the lab, work on an assignment and check it
  OUT/pyproject.toml, requirements.txt, lab/    the lab, installable with `pip install OUT`
  OUT/notebooks/assignments/NAME.py   the handouts, README.md, and tests/NAME.py (the visible tests)

`solutions/` (solutions and hidden tests) and INSTRUCTORS.md are never copied. After writing, the
release is checked: no file in it may contain the body of any solution function (`solution_bodies`),
so a solution pasted by mistake into a handout, a visible test or the lab stops the release. A few
one-line answers are word for word the lab's own code (`growth_map` is `torch.arange(new) % old` in
`lab.growth` too); the lab ships by design, so those bodies are not counted as leaks (the grader keeps
students from calling them with OFF_LIMITS instead).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from lab.errors import LabError
from lab.grading.assignments import ASSIGNMENTS_DIR, available, solution_file, student_file
from lab import paths

REPOSITORY = paths.ROOT

STUDENT_README = """# Course assignments

1. Install the lab (Python 3.10 or newer), from this folder:

       python -m venv .venv && . .venv/bin/activate
       pip install -r requirements.txt && pip install -e .

2. Work on a handout in `notebooks/assignments/` (see its README.md): replace every
   `raise NotImplementedError(...)` and keep the `# assignment: NAME` line.

3. Check your work as often as you like:

       python -m lab grade notebooks/assignments/01_fpi.py

   Your code runs in a separate, sandboxed process; the report ends with `score: X/Y`. These are the
   visible tests; your instructor also runs hidden tests of the same functions on other inputs.
   In a copy outside this folder, tell the grader where the tests are:
   `LAB_ASSIGNMENTS=/path/to/this/folder/notebooks/assignments python -m lab grade my_copy.py`.
"""


def graded_functions(handout: Path) -> list[str]:
    """The functions of a handout that students write: those whose body raises NotImplementedError."""
    tree = ast.parse(handout.read_text(encoding="utf-8"))
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any(isinstance(n, ast.Raise) and "NotImplementedError" in ast.unparse(n) for n in ast.walk(node))]


def normalized_lines(text: str) -> list[str]:
    """The code lines of `text`, stripped, without blank lines and comments (how bodies are compared)."""
    lines = (line.split("#", 1)[0].strip() if not line.strip().startswith(("'", '"')) else line.strip()
             for line in text.splitlines())
    return [line for line in lines if line]


def solution_bodies(name: str, *, distinctive: bool = True) -> dict[str, str]:
    """{function: its body in the solution, normalized} for every graded function of assignment `name`;
    with `distinctive`, only the bodies that are not word for word in the lab's own code."""
    source = solution_file(name).read_text(encoding="utf-8")
    tree = ast.parse(source)
    wanted = set(graded_functions(student_file(name)))
    bodies = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in wanted:
            statements = node.body[1:] if ast.get_docstring(node) is not None else node.body
            text = "\n".join(ast.get_source_segment(source, s, padded=True) or "" for s in statements)
            bodies[node.name] = "\n".join(normalized_lines(text))
    if distinctive:
        in_lab = {function for _, function in files_containing(REPOSITORY / "lab", bodies)}
        bodies = {function: body for function, body in bodies.items() if function not in in_lab}
    return bodies


def files_containing(folder: Path, bodies: dict[str, str]) -> list[tuple[Path, str]]:
    """(file, function) for every text file under `folder` that contains one of the solution `bodies`."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            text = "\n".join(normalized_lines(path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue
        found += [(path, function) for function, body in bodies.items() if body and body in text]
    return found


def release(out: Path, force: bool = False) -> list[Path]:
    """Write the student release into `out`; the files written. LabError if `out` is in use or a solution leaks."""
    if out.exists() and any(out.iterdir()) and not force:
        raise LabError(f"{out}: exists and is not empty (use --force to replace it)")
    if out.resolve() == REPOSITORY or REPOSITORY in out.resolve().parents and not force:
        raise LabError(f"{out}: inside the repository; write the release somewhere else")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "README.md").write_text(STUDENT_README, encoding="utf-8")
    for name in ("pyproject.toml", "requirements.txt"):
        if (REPOSITORY / name).is_file():
            shutil.copy2(REPOSITORY / name, out / name)
    shutil.copytree(REPOSITORY / "lab", out / "lab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    handouts = out / "notebooks" / "assignments"
    (handouts / "tests").mkdir(parents=True)
    shutil.copy2(ASSIGNMENTS_DIR / "README.md", handouts / "README.md")
    for name in available():
        shutil.copy2(student_file(name), handouts / f"{name}.py")
        shutil.copy2(ASSIGNMENTS_DIR / "tests" / f"{name}.py", handouts / "tests" / f"{name}.py")
    leaks = [leak for name in available() for leak in files_containing(out, solution_bodies(name))]
    if leaks:
        path, function = leaks[0]
        raise LabError(f"release stopped: {path.relative_to(out)} contains the solution of {function}()")
    return sorted(p for p in out.rglob("*") if p.is_file())
