"""Golden losses: a tiny dense model and a tiny MoE trained 20 steps from a fixed seed on the shipped
corpus, every step's loss (and the MoE's auxiliary losses) compared with numbers committed in
`tests/golden_losses.json`.

A change meant to leave the numerics alone (a refactor of the training step, the optimizer, the data
order, the model's code) keeps these numbers to 1e-6; a change meant to alter them regenerates the file
on purpose (`python tests/test_golden_losses.py --write`) and says why in its commit (CONTRIBUTING.md).
The runs use one thread: the order of a multi-threaded reduction may vary with the machine's thread count.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_fixtures import records, tiny_recipe  # noqa: E402

GOLDEN = Path(__file__).with_name("golden_losses.json")
STEPS = 20
TOLERANCE = 1e-6
CASES = {
    "dense": tiny_recipe(train={"max_steps": STEPS, "eval_every": STEPS, "save_every": STEPS, "sample_tokens": 0}),
    "moe": tiny_recipe(model={"n_experts": 4, "top_k": 2}, train={"max_steps": STEPS, "eval_every": STEPS,
                                                                   "save_every": STEPS, "sample_tokens": 0}),
}
FIELDS = ("loss", "lm_loss", "aux_loss", "z_loss")


def measure(name: str, out: Path) -> list[dict]:
    """Every step's losses of case `name`, trained into `out` on one thread."""
    from lab.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(CASES[name], out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return [{k: r[k] for k in FIELDS if k in r} | {"step": r["step"]} for r in records(out, "train")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_losses_equal_the_committed_ones(name, tmp_path):
    golden = json.loads(GOLDEN.read_text())[name]  # a missing file or case fails: it is part of the test
    measured = measure(name, tmp_path / name)
    assert [r["step"] for r in measured] == [r["step"] for r in golden] == list(range(1, STEPS + 1))
    for got, want in zip(measured, golden):
        assert set(got) == set(want), (got, want)
        for key in want:
            if key != "step":
                assert abs(got[key] - want[key]) <= TOLERANCE, f"{name} step {want['step']} {key}: {got[key]} != {want[key]}"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = {name: measure(name, Path(tmp) / name) for name in sorted(CASES)}
    GOLDEN.write_text("{\n" + ",\n".join(f'"{name}": [\n' + ",\n".join(json.dumps(r) for r in rows) + "\n]"
                                          for name, rows in result.items()) + "\n}\n")
    print(f"wrote {GOLDEN}")
