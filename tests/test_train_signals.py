"""A run stopped by SIGTERM, SIGINT or even SIGKILL leaves its last complete checkpoint, and resumes."""

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

import lab
from lab.train.state import complete_checkpoints
from train_fixtures import records, tiny_recipe


def start(recipe_path, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "lab", "train", "--recipe", str(recipe_path), "--out", str(out),
                             "--quiet", *map(str, extra)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(out, step, process, timeout=60.0):
    """Wait until the run has logged `step` (polling its metrics, as a dashboard would)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        path = out / "metrics.jsonl"
        if path.is_file():
            logged = [r for r in lab.runs.read_metrics(path).records if r["event"] == "train"]
            if logged and logged[-1]["step"] >= step:
                return
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the run did not reach step {step}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_current_step_and_stops(tmp_path, sig):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(train={"max_steps": 100000, "eval_every": 0, "save_every": 0,
                                                        "sample_tokens": 0})))
    out = tmp_path / "run"
    process = start(recipe, out)
    wait_for_step(out, 3, process)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    stop = records(out, "stop")[0]
    assert stop["signal"] == sig.name
    assert f"stopped by {sig.name} at step {stop['step']}" in err and "--resume" in err
    assert [s for s, _ in complete_checkpoints(out)] == [stop["step"]]
    lab.load_pretrained(complete_checkpoints(out)[0][1])  # loadable as it is
    # And resumable: two more steps, counted from where it stopped.
    resumed = start(recipe, out, "--resume", "--max-steps", stop["step"] + 2)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    steps = [r["step"] for r in records(out, "train")]
    assert steps == list(range(1, stop["step"] + 3))


def test_a_hard_kill_leaves_a_resumable_run(tmp_path):
    """SIGKILL can land in the middle of a checkpoint write: what is left is ignored and removed."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(train={"max_steps": 100000, "eval_every": 0, "save_every": 1,
                                                        "keep_checkpoints": 3, "sample_tokens": 0})))
    out = tmp_path / "run"
    process = start(recipe, out)
    wait_for_step(out, 4, process)
    process.kill()
    process.communicate(timeout=60)
    last = complete_checkpoints(out)[-1][0]
    assert last >= 3
    resumed = start(recipe, out, "--resume", "--max-steps", last + 1)
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert records(out, "resume")[0]["from_step"] == last
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert json.loads((out / "checkpoints" / f"step-{last + 1:06d}" / "training_state.json").read_text())["step"] == last + 1
