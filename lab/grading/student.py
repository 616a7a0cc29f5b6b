"""Load a student's submission (a .py file, jupytext or plain, or a .ipynb notebook) as a module."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path


def submission_source(path: Path) -> str:
    """The Python source of a submission: a notebook's code cells joined, IPython magics dropped."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    notebook = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells", []), list):
        raise ValueError("not a Jupyter notebook (expected a JSON object with a list of cells)")
    cells = []
    for cell in notebook.get("cells", []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        # `%matplotlib`, `!pip ...` and `?` help lines are IPython, not Python.
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!", "?"))]
        cells.append("\n".join(lines))
    return "\n\n".join(cells) + "\n"


def load_submission(path: Path) -> types.ModuleType:
    """Execute the submission as a fresh module named `submission` (its top-level code runs here)."""
    module = types.ModuleType("submission")
    module.__file__ = str(path)
    sys.modules["submission"] = module
    code = compile(submission_source(path), str(path), "exec")
    exec(code, module.__dict__)
    return module
