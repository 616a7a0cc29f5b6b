"""The command line: help, one-line errors for user mistakes, and each command on a tiny checkpoint."""

import json
import subprocess
import sys

import pytest
import torch

import lab
from lab import DecoderLM, ModelConfig


def run_lab(*args):
    return subprocess.run([sys.executable, "-m", "lab", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cli") / "ckpt"
    model = DecoderLM(ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=48, n_experts=4, top_k=2,
                                  qkv_bias=False))
    lab.save_pretrained(model, path)
    return path


def test_help_lists_the_commands():
    result = run_lab("--help")
    assert result.returncode == 0
    for command in ("info", "generate", "bench"):
        assert command in result.stdout


def test_info(checkpoint):
    result = run_lab("info", checkpoint, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["model_type"], info["n_experts"], info["dim"]) == ("mixtral", 4, 32)


def test_generate_from_ids_is_the_library_generate(checkpoint):
    result = run_lab("generate", checkpoint, "--ids", "1,2,3", "--max-new-tokens", "5")
    assert result.returncode == 0, result.stderr
    expected = lab.generate(lab.load_pretrained(checkpoint), torch.tensor([[1, 2, 3]]), 5)
    assert result.stdout.split() == [str(t) for t in expected[0].tolist()]


@pytest.mark.parametrize("args, message", [
    (["info", "/no/such/dir"], "error: /no/such/dir: not a directory"),
    (["generate", "CKPT", "--prompt", "hello"], "no tokenizer.json to encode --prompt"),
    (["generate", "CKPT", "--ids", "1,x"], "--ids: expected integers"),
    (["generate", "CKPT", "--ids", "1,999"], "token ids must be in [0, 64)"),
])
def test_user_mistakes_give_one_line_and_exit_2(checkpoint, args, message):
    result = run_lab(*[checkpoint if a == "CKPT" else a for a in args])
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_bad_option_value_is_rejected_by_the_parser(checkpoint):
    result = run_lab("generate", checkpoint, "--ids", "1", "--top-p", "1.5")
    assert result.returncode == 2 and "must be in (0, 1]" in result.stderr


@pytest.mark.slow
def test_bench_model_quick_runs_and_writes_json(tmp_path):
    result = run_lab("bench", "model", "--quick", "--repeats", "1", "--warmup", "1", "--json", tmp_path / "b.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["cases"]) == {"moe", "dense"}
    assert "moe: lab / transformers" in result.stdout


def test_the_console_script_runs_the_same_cli(tmp_path):
    """`efficientscale` (pyproject's console script) is `python -m lab`: same entry, same exit codes."""
    import shutil
    from importlib.metadata import entry_points
    from pathlib import Path

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "efficientscale"]
    assert script.value == "lab.cli:run"
    exe = shutil.which("efficientscale") or str(Path(sys.executable).parent / "efficientscale")
    done = subprocess.run([exe, "info", str(tmp_path / "missing")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
