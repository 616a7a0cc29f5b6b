"""The seeded experiments by name. Each module defines NAME, PAPER, `Settings` (a CommonSettings dataclass),
`plan_runs(settings, seed, seed_dir)` (the seed's runs, checked, nothing run) and
`measure(settings, seed_dir)` (the seed's named scalars, read from its runs' metrics)."""

from __future__ import annotations

import importlib

from lab.errors import LabError

MODULES = {"table1": "lab.experiments.table1", "table2": "lab.experiments.table2",
           "upcycle": "lab.experiments.upcycle", "pipeline": "lab.experiments.pipeline",
           "balance": "lab.experiments.balance", "msg": "lab.experiments.msg", "llama_pro": "lab.experiments.llama_pro"}


def experiment(name: str):
    """The module of experiment `name`, or a LabError listing the known ones."""
    if name not in MODULES:
        raise LabError(f"unknown experiment {name!r} (known: {', '.join(MODULES)})")
    return importlib.import_module(MODULES[name])
