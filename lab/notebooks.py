"""The notebooks: jupytext percent-format `.py` files in `notebooks/` are the source; `.ipynb` are built.

- `notebook_sources()`: the numbered notebooks (`notebooks/NN_name.py`), in order;
- `build(source)`: the `.ipynb` beside it (written to a temporary sibling, then renamed), never
  hand-edited, so `make notebooks` can rebuild them all at any time;
- `execute(source, fast=True)`: run a notebook top to bottom in a fresh kernel (nbclient) with
  `LAB_FAST=1` and progress bars off (`LAB_PROGRESS=0`), in the notebook's folder; returns how long it
  took, and the executed notebook (kept in memory; written only when asked). A failing cell raises
  `nbclient.exceptions.CellExecutionError` naming the cell and its traceback.

The kernel is "python3" as the running interpreter sees it: jupyter_client starts a kernel spec whose
command is `python` with the interpreter it runs in, so the kernel is the same virtual environment.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from lab import paths
from lab.atomic_files import write_text_atomically

NOTEBOOK_DIR = paths.NOTEBOOKS_DIR
KERNEL_NAME = "python3"
KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}


def notebook_sources(directory: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks' sources, `NN_*.py`, sorted by number."""
    directory = Path(directory) if directory is not None else NOTEBOOK_DIR
    return sorted(p for p in directory.glob("[0-9][0-9]_*.py") if p.is_file())


def read_notebook(source: str | os.PathLike):
    """The notebook of a percent-format source, with the lab's kernel spec."""
    import jupytext

    nb = jupytext.read(Path(source), fmt="py:percent")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata.pop("jupytext", None)  # a built notebook is an output, not a paired file
    return nb


def _write_atomic(nb, target: Path) -> Path:
    import nbformat

    write_text_atomically(target, nbformat.writes(nb))
    return target


def build(source: str | os.PathLike, target: str | os.PathLike | None = None) -> Path:
    """Write the `.ipynb` of `source` (default: beside it), unexecuted."""
    source = Path(source)
    return _write_atomic(read_notebook(source), Path(target) if target is not None else source.with_suffix(".ipynb"))


@dataclass
class Executed:
    source: Path
    seconds: float
    notebook: object  # nbformat.NotebookNode, with outputs


def execute(source: str | os.PathLike, *, fast: bool = True, timeout: int = 600, output: str | os.PathLike | None = None,
            env: dict[str, str] | None = None) -> Executed:
    """Run the notebook of `source` top to bottom in a fresh kernel; `output` also writes the executed .ipynb.

    `timeout` bounds each cell (seconds). The kernel gets this process's environment plus LAB_FAST
    (when `fast`), LAB_PROGRESS=0 and `env`.
    """
    from nbclient import NotebookClient

    source = Path(source)
    nb = read_notebook(source)
    kernel_env = {**os.environ, "LAB_PROGRESS": "0", **({"LAB_FAST": "1"} if fast else {}), **(env or {})}
    if not fast:
        kernel_env.pop("LAB_FAST", None)
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME, allow_errors=False,
                            store_widget_state=True, resources={"metadata": {"path": str(source.parent)}})
    started = time.perf_counter()
    client.execute(env=kernel_env)
    seconds = time.perf_counter() - started
    if output is not None:
        _write_atomic(nb, Path(output))
    return Executed(source, seconds, nb)
