"""Where things are in the repository: the one place that knows its layout. The package lives in
`lab/` at the repository's root (installed in editable mode by `make`), beside the data, recipes,
notebooks and the dashboard's entry point."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
RECIPES_DIR = ROOT / "recipes"
NOTEBOOKS_DIR = ROOT / "notebooks"
ASSIGNMENTS_DIR = NOTEBOOKS_DIR / "assignments"
REFERENCE_RUNS_DIR = DATA_DIR / "runs"
DASHBOARD_APP = ROOT / "app.py"
