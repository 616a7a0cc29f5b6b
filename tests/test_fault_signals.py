"""The fault suite's signal cases: SIGTERM is SIGINT everywhere, from the first instant of a command.

Each command ends with exit code 130 and one `interrupted` line, leaves no temporary output behind,
and a pipeline interrupted in its growth step resumes to the same weights as one never interrupted.
(Training's own signal cases, a step checkpointed then resumed, are in tests/test_train_signals.py.)
The signals that must land in the middle of a write are sent by the process to itself from a hook on
the safetensors writer, so that the moment is exact rather than a matter of timing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fault_fixtures import dense_checkpoint, recipe_file
from train_fixtures import tiny_recipe

from lab.cli import main

pytestmark = pytest.mark.slow

# Runs `lab.cli.main(argv)` with the safetensors writer sending SIGNAL to its own process after the first
# tensor of a file whose path contains MARK.
KILLING_WRITER = """
import os, signal, sys
import lab.checkpoint.io as io
writer = io.write_safetensors
mark, signum = sys.argv[1], int(sys.argv[2])
def write_and_signal(path, entries, metadata=None, on_tensor=None, **options):
    def after(entry):
        if mark in str(path):
            os.kill(os.getpid(), signum)
        if on_tensor is not None:
            on_tensor(entry)
    return writer(path, entries, metadata, after, **options)
io.write_safetensors = write_and_signal
from lab.cli import main
sys.exit(main(sys.argv[3:]))
"""


def run_killed(mark: str, signum: int, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLING_WRITER, mark, str(int(signum)), *argv],
                          capture_output=True, text=True, timeout=300)


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name or ".partial-" in p.name]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return dense_checkpoint(tmp_path_factory.mktemp("signals") / "src")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_exits_130_without_a_traceback(signum, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "lab", "info", str(tmp_path)], stderr=subprocess.PIPE,
                               text=True)
    time.sleep(0.3)  # inside `import lab` (torch takes seconds)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted"]


@pytest.mark.parametrize("command", [["grow", "--intermediate-size", "64"], ["upcycle", "--num-experts", "2"]])
def test_sigterm_while_writing_removes_the_temporary_output(command, source, tmp_path):
    out = tmp_path / "out"
    done = run_killed(".tmp-", signal.SIGTERM, [command[0], str(source), str(out), *command[1:]])
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() and not leftovers(tmp_path)


def _pipeline(tmp_path: Path) -> Path:
    model = tiny_recipe()["model"]
    shared = {"data": tiny_recipe()["data"], "train": {"max_steps": 2, "eval_every": 0, "eval_sequences": 2,
                                                      "save_every": 1, "sample_tokens": 0}}
    return recipe_file(tmp_path / "p.yaml", {"pipeline": "p", "seed": 0, **shared, "stages": [
        {"name": "dense", "model": model},
        {"name": "grown", "grow": {"method": "fpi", "ffn_dim": 96, "noise": 0.01}}]})


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(checkpoint / "model.safetensors"))


def test_sigterm_in_the_pipeline_growth_step_then_resume_equals_an_uninterrupted_run(tmp_path):
    recipe = _pipeline(tmp_path)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["pipeline", "--recipe", str(recipe), "--out", str(straight), "--quiet"]) == 0
    done = run_killed("/init/", signal.SIGTERM, ["pipeline", "--recipe", str(recipe), "--out", str(stopped),
                                                  "--quiet"])
    assert done.returncode == 130, done.stderr
    assert not leftovers(stopped) and not (stopped / "init" / "grown").exists()
    assert main(["pipeline", "--recipe", str(recipe), "--out", str(stopped), "--resume", "--quiet"]) == 0
    a, b = _weights(straight / "stages" / "grown" / "final"), _weights(stopped / "stages" / "grown" / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
