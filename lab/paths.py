"""Where things are: the one place that knows the layout. In a checkout (installed in editable mode by
`make`) the package lives in `lab/` at the repository's root, beside the data, recipes, notebooks and
the dashboard's entry point; an installed wheel carries the same files in `lab/shipped/` (setup.py)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent
ROOT = _CHECKOUT if (_CHECKOUT / "app.py").is_file() and (_CHECKOUT / "recipes").is_dir() else _PACKAGE / "shipped"
DATA_DIR = ROOT / "data"
RECIPES_DIR = ROOT / "recipes"
NOTEBOOKS_DIR = ROOT / "notebooks"
ASSIGNMENTS_DIR = NOTEBOOKS_DIR / "assignments"
REFERENCE_RUNS_DIR = DATA_DIR / "runs"
DASHBOARD_APP = ROOT / "app.py"
