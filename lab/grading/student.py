"""A student's submission as cells: a .ipynb notebook's code cells, or a .py file's `# %%` cells.

A notebook and the jupytext `.py` of the same notebook have the same cells, so they load the same way
and earn the same grade. Loading runs cell after cell, like "run all" that goes on after an error: a
broken scratch cell costs only what it defines, and its error names the cell and the line in it. A
plain `.py` file without `# %%` markers is one cell: an error at its top level stops the whole file.
"""

from __future__ import annotations

import json
import linecache
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path

_CELL_MARKER = re.compile(r"^# %%")


@dataclass(frozen=True)
class Cell:
    number: int  # 1-based, counting code cells only
    source: str
    first_line: int  # where its first line is in the file (.py) or in the notebook's code joined (.ipynb)
    in_notebook: bool

    def where(self, line: int, only_cell: bool = False) -> str:
        """A line of this cell's code as the student finds it: "code cell 3, line 2" in a notebook, "your
        line 57 (cell 3)" in a .py of cells, "your line 57" in a plain .py."""
        if self.in_notebook:
            return f"code cell {self.number}, line {line - self.first_line + 1}"
        return f"your line {line}" if only_cell else f"your line {line} (cell {self.number})"


def _notebook_cells(text: str) -> list[str]:
    notebook = json.loads(text)
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells", []), list):
        raise ValueError("not a Jupyter notebook (expected a JSON object with a list of cells)")
    cells = []
    for cell in notebook.get("cells", []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(s for s in source if isinstance(s, str)) if isinstance(source, list) else str(source)
        # `%matplotlib`, `!pip ...` and `?` help lines are IPython, not Python; a blank line keeps the numbering.
        lines = ["" if line.lstrip().startswith(("%", "!", "?")) else line for line in source.splitlines()]
        cells.append("\n".join(lines) + "\n")
    return cells


def _py_cells(text: str) -> list[tuple[str, int, bool]]:
    """(source, first line, is markdown) of each `# %%` cell; the whole file when there is no marker."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _CELL_MARKER.match(line)]
    if not starts:
        return [(text, 1, False)]
    if starts[0] != 0:
        starts.insert(0, 0)
    bounds = zip(starts, starts[1:] + [len(lines)])
    return [("".join(lines[a:b]), a + 1, "[markdown]" in lines[a] and _CELL_MARKER.match(lines[a]) is not None)
            for a, b in bounds]


def submission_cells(path: Path) -> list[Cell]:
    """The code cells of a submission; ValueError when it cannot be read as Python or as a notebook."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells, line = [], 1
        for number, source in enumerate(_notebook_cells(text), 1):
            cells.append(Cell(number, source, line, True))
            line += source.count("\n")
        return cells
    code = [(source, first) for source, first, markdown in _py_cells(text) if not markdown]
    return [Cell(number, source, first, False) for number, (source, first) in enumerate(code, 1)]


def submission_source(path: Path) -> str:
    """The Python code of a submission, its cells joined (to find its `# assignment:` line)."""
    return "".join(cell.source for cell in submission_cells(path))


def compile_cell(cell: Cell, filename: str):
    """The cell's code object, its line numbers those of the file (or of the notebook's code joined)."""
    return compile("\n" * (cell.first_line - 1) + cell.source, filename, "exec")


@dataclass
class CellError:
    cell: Cell
    error: BaseException


def load_cells(path: Path, filename: str) -> tuple[types.ModuleType, list[CellError]]:
    """Run every cell into a fresh module named `submission`; the errors of the cells that failed.

    `__name__` is not "__main__", so experiments under `if __name__ == "__main__":` do not run.
    """
    module = types.ModuleType("submission")
    module.__file__ = filename
    sys.modules["submission"] = module
    errors = []
    cells = submission_cells(path)
    if path.suffix == ".ipynb":  # tracebacks then quote the notebook's code, not lines of its JSON
        lines = "".join(cell.source for cell in cells).splitlines(keepends=True)
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    for cell in cells:
        try:
            exec(compile_cell(cell, filename), module.__dict__)
        except BaseException as error:  # noqa: BLE001 - a broken cell (even exit()) is the student's; go on
            errors.append(CellError(cell, error))
    return module, errors


def line_of(lineno: int, cells: list[Cell]) -> str:
    """Where line `lineno` of the joined code is, in the student's terms."""
    for cell in reversed(cells):
        if lineno >= cell.first_line:
            return cell.where(lineno, only_cell=len(cells) == 1)
    return f"your line {lineno}"
