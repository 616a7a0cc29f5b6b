"""The seeded experiments and the claims file, as the notebooks show them: per-seed values, their mean and
spread, the paper's statement and the verdict of the fixed rule (lab.experiments.claims).

Reads what the project ships: the exported experiments in `data/runs/experiments/seed-<base>/<name>/` and
`data/claims.json`. An experiment not exported yet gives an empty table, never an error, so a notebook
still runs; `claims_table` then lists only the claims that have been judged.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from lab import paths
from lab.paper import CLAIM_NUMBERS

EXPERIMENTS_DIR = paths.REFERENCE_RUNS_DIR / "experiments"
CLAIMS_FILE = paths.DATA_DIR / "claims.json"


def measurements(name: str, base: int = 0, root: str | Path | None = None) -> dict[int, dict[str, float]]:
    """{seed: {measurement: value}} of experiment `name` from seed base `base` ({} when not exported)."""
    folder = Path(root or EXPERIMENTS_DIR) / f"seed-{base}" / name
    found = {}
    for path in sorted(folder.glob("seed-*/measurements.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        found[int(record["seed"])] = record["values"]
    return found


def per_seed_table(name: str, keys: list[str], base: int = 0, root: str | Path | None = None):
    """A DataFrame: one row per measurement in `keys`, one column per seed, then mean and sample stdev."""
    import pandas as pd

    seeds = measurements(name, base, root)
    rows = {}
    for key in keys:
        values = {f"seed {s}": v[key] for s, v in seeds.items() if key in v}
        if values:
            xs = list(values.values())
            rows[key] = {**values, "mean": statistics.fmean(xs), "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0}
    return pd.DataFrame(rows).T


def claims_table(ids: list[str], path: str | Path | None = None):
    """The judged claims among `ids`: text, source, the paper's values of both sides (lab.paper, where it
    gives numbers), the lab's mean of each side, mean difference b - a, seeds, verdict."""
    import pandas as pd

    path = Path(path or CLAIMS_FILE)
    entries = json.loads(path.read_text(encoding="utf-8"))["claims"] if path.is_file() else []
    rows = {}
    for e in entries:
        if e["id"] in ids:
            d = [b - a for a, b in zip(e["a_values"], e["b_values"])]
            paper = CLAIM_NUMBERS.get(e["id"])
            rows[e["id"]] = {"claim": e["text"], "source": e["paper"],
                             "paper: a / b": f"{paper[0]:g} / {paper[1]:g}" if paper else "(no number)",
                             "a (mean)": statistics.fmean(e["a_values"]), "b (mean)": statistics.fmean(e["b_values"]),
                             "b - a (mean)": statistics.fmean(d), "seeds": len(d), "verdict": e["verdict"]}
    return pd.DataFrame(rows).T
