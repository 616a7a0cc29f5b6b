"""The fault suite: bad inputs a hostile or careless user gives, and the promise each one must keep.

Every case of `BAD_INPUTS` builds its broken fixture, runs one command in-process and checks the
promise of the command line: exit code 2, exactly one line on stderr, `error: ...` naming what is
wrong (the file, key or option), no traceback, nothing written (no output, no temporary `.tmp-*`
sibling) and the inputs unchanged. `FAULTS` are the other promises under faults that need more than
one call (a second writer, a corrupt checkpoint on --resume, stale temporaries); the signal cases are
in tests/test_fault_signals.py. The README counts both ("N bad inputs and M faults").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml
from fault_fixtures import (ALIAS_BOMB, dense_checkpoint, edit_config, fingerprint, nested, recipe_file,
                            sharded_with_index, truncated_safetensors, with_integer_tensor, with_nan_weight)
from train_fixtures import tiny_recipe

from lab.cli import main


@dataclass
class Case:
    """`build(tmp)` makes the fixture and returns (argv, inputs, outputs); the error line must hold `names`."""

    id: str
    build: Callable[[Path], tuple[list[str], list[Path], list[Path]]]
    names: str


BAD_INPUTS: list[Case] = []


def case(names: str):
    def register(build):
        BAD_INPUTS.append(Case(build.__name__, build, names))
        return build
    return register


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return dense_checkpoint(tmp_path_factory.mktemp("faults") / "src")


def _copy(source: Path, tmp: Path, name: str = "src") -> Path:
    import shutil

    return Path(shutil.copytree(source, tmp / name))


# ---------------------------------------------------------------- config.json: wrong types, malformed
def _config_case(names: str, **changes):
    def build(tmp: Path):
        src = edit_config(_copy(SOURCE[0], tmp), **changes)
        return ["grow", str(src), str(tmp / "out"), "--intermediate-size", "64"], [src], [tmp / "out"]
    return names, build


for _name, (_names, _build) in {
    "config_heads_string": _config_case("num_attention_heads must be an integer", num_attention_heads="4"),
    "config_rope_theta_text": _config_case("rope_theta must be a finite number", rope_theta="abc"),
    "config_vocab_bool": _config_case("vocab_size must be an integer", vocab_size=True),
    "config_rope_scaling_text": _config_case("rope_scaling must be a mapping", rope_scaling="abc"),
    "config_hidden_size_huge": _config_case("ModelConfig.dim", hidden_size=2**40),
    "config_model_type_list": _config_case("unsupported model_type", model_type=["qwen2"]),
}.items():
    _build.__name__ = _name
    case(_names)(_build)


@case("num_experts_per_tok must be an integer")
def config_mixtral_topk_string(tmp):
    src = edit_config(_copy(SOURCE[0], tmp), model_type="mixtral", num_local_experts=2, num_experts_per_tok="2")
    return ["info", str(src)], [src], []


@case("mlp_only_layers must be a list of integers")
def config_qwen2_moe_dense_layers_int(tmp):
    src = edit_config(_copy(SOURCE[0], tmp), model_type="qwen2_moe", num_experts=2, num_experts_per_tok=1,
                      moe_intermediate_size=32, mlp_only_layers=5)
    return ["info", str(src)], [src], []


@case("config.json: nested deeper than")
def config_deeply_nested(tmp):
    src = _copy(SOURCE[0], tmp)
    (src / "config.json").write_text('{"model_type": "qwen2", "x": ' + nested(100_000) + "}")
    return ["info", str(src)], [src], []


@case("config.json: not valid JSON")
def config_not_json(tmp):
    src = _copy(SOURCE[0], tmp)
    (src / "config.json").write_bytes(b"\xff\xfe{")
    return ["upcycle", str(src), str(tmp / "out")], [src], [tmp / "out"]


@case("config.json: expected a JSON object")
def config_a_list(tmp):
    src = _copy(SOURCE[0], tmp)
    (src / "config.json").write_text("[1, 2]")
    return ["generate", str(src), "--ids", "1"], [src], []


# ---------------------------------------------------------------- safetensors: index, dtype, values
@case("weight_map must be a non-empty mapping")
def index_weight_map_list(tmp):
    src = sharded_with_index(_copy(SOURCE[0], tmp), ["model-00001-of-00001.safetensors"])
    return ["grow", str(src), str(tmp / "out"), "--intermediate-size", "64"], [src], [tmp / "out"]


@case("must be a file name in the checkpoint directory")
def index_points_outside(tmp):
    src = sharded_with_index(_copy(SOURCE[0], tmp), {"model.embed_tokens.weight": "../../etc/passwd"})
    return ["generate", str(src), "--ids", "1"], [src], []


@case("has dtype 'I64'")
def tensor_integer_dtype(tmp):
    src = with_integer_tensor(_copy(SOURCE[0], tmp))
    return ["upcycle", str(src), str(tmp / "out"), "--num-experts", "2", "--top-k", "1"], [src], [tmp / "out"]


@case("not a readable safetensors file")
def tensor_file_truncated(tmp):
    src = _copy(SOURCE[0], tmp)
    truncated_safetensors(src / "model.safetensors")
    return ["grow", str(src), str(tmp / "out"), "--intermediate-size", "64"], [src], [tmp / "out"]


@case("holds NaN or infinite values")
def weights_nan_grow(tmp):
    src = with_nan_weight(_copy(SOURCE[0], tmp))
    return ["grow", str(src), str(tmp / "out"), "--intermediate-size", "64"], [src], [tmp / "out"]


@case("holds NaN or infinite values")
def weights_nan_upcycle(tmp):
    src = with_nan_weight(_copy(SOURCE[0], tmp))
    return ["upcycle", str(src), str(tmp / "out"), "--num-experts", "2", "--top-k", "1"], [src], [tmp / "out"]


@case("holds NaN or infinite values")
def weights_nan_generate(tmp):
    src = with_nan_weight(_copy(SOURCE[0], tmp))
    return ["generate", str(src), "--ids", "1,2"], [src], []


@case("holds NaN or infinite values")
def weights_nan_train_init(tmp):
    src = with_nan_weight(_copy(SOURCE[0], tmp))
    recipe = recipe_file(tmp / "r.yaml", tiny_recipe(train={"max_steps": 2}))
    return ["train", "--recipe", str(recipe), "--out", str(tmp / "run"), "--init", str(src)], [src, recipe], [tmp / "run"]


# ---------------------------------------------------------------- tokenizer files
@case("not a tokenizer.json")
def tokenizer_garbage(tmp):
    src = _copy(SOURCE[0], tmp)
    (src / "tokenizer.json").write_text('{"model": 5}')
    return ["generate", str(src), "--prompt", "hello"], [src], []


# ---------------------------------------------------------------- recipes (YAML)
@case("YAML aliases are not allowed")
def recipe_alias_bomb(tmp):
    recipe = recipe_file(tmp / "r.yaml", ALIAS_BOMB)
    return ["train", "--recipe", str(recipe), "--out", str(tmp / "run")], [recipe], [tmp / "run"]


@case("YAML aliases are not allowed")
def pipeline_alias_bomb(tmp):
    recipe = recipe_file(tmp / "p.yaml", ALIAS_BOMB)
    return ["pipeline", "--recipe", str(recipe), "--check"], [recipe], []


@case("not UTF-8 text")
def recipe_not_utf8(tmp):
    recipe = tmp / "r.yaml"
    recipe.write_bytes(b"run: caf\xe9\n")
    return ["train", "--recipe", str(recipe), "--out", str(tmp / "run")], [recipe], [tmp / "run"]


@case("not UTF-8 text")
def pipeline_not_utf8(tmp):
    recipe = tmp / "p.yaml"
    recipe.write_bytes(b"pipeline: caf\xe9\n")
    return ["pipeline", "--recipe", str(recipe), "--out", str(tmp / "out")], [recipe], [tmp / "out"]


@case("ModelConfig.n_heads='4': must be an integer")
def recipe_model_type_error(tmp):
    recipe = recipe_file(tmp / "r.yaml", tiny_recipe(model={"n_heads": "4"}))
    return ["train", "--recipe", str(recipe), "--out", str(tmp / "run")], [recipe], [tmp / "run"]


@case("recipe optim.lr: must be a finite number")
def recipe_lr_infinite(tmp):
    recipe = recipe_file(tmp / "r.yaml", tiny_recipe(optim={"lr": float("inf")}))
    return ["train", "--recipe", str(recipe), "--out", str(tmp / "run")], [recipe], [tmp / "run"]


@case("recipe train.max_steps: must be an integer")
def recipe_huge_value_quoted_short(tmp):
    recipe = recipe_file(tmp / "r.yaml", tiny_recipe(train={"max_steps": "9" * 100_000}))
    return ["train", "--recipe", str(recipe), "--out", str(tmp / "run")], [recipe], [tmp / "run"]


@case("nested more than")
def recipe_deeply_nested(tmp):
    recipe = recipe_file(tmp / "r.yaml", "run: x\nmodel: " + nested(5_000) + "\n")
    return ["train", "--recipe", str(recipe), "--out", str(tmp / "run")], [recipe], [tmp / "run"]


@case("pipeline stages[0].optim: must be a mapping")
def pipeline_stage_section_not_mapping(tmp):
    recipe = recipe_file(tmp / "p.yaml", {"pipeline": "p", "stages": [{"name": "a", "model": {}, "optim": 5}]})
    return ["pipeline", "--recipe", str(recipe), "--out", str(tmp / "out")], [recipe], [tmp / "out"]


@case("pipeline stages[1].grow.noise: must be a finite number")
def pipeline_grow_noise_infinite(tmp):
    recipe = recipe_file(tmp / "p.yaml", {"pipeline": "p", "data": tiny_recipe()["data"], "stages": [
        {"name": "a", "model": dict(tiny_recipe()["model"])},
        {"name": "b", "grow": {"method": "fpi", "noise": float("inf")}}]})
    return ["pipeline", "--recipe", str(recipe), "--out", str(tmp / "out")], [recipe], [tmp / "out"]


# ---------------------------------------------------------------- metrics.jsonl and meta.json
def _run_dir(tmp: Path, lines: list[str], meta: str | None = None) -> Path:
    run = tmp / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    if meta is not None:
        (run / "meta.json").write_text(meta)
    return run


TRAIN = {"event": "train", "stage": "s", "stage_name": "s", "step": 1, "tokens": 100, "flops": 1e9, "loss": 3.0}


@case("no train records with tokens, FLOPs and tokens/s")
def metrics_infinite_throughput(tmp):
    run = _run_dir(tmp, [json.dumps({**TRAIN, "tokens_per_s": math.inf})])
    return ["savings", "--run", str(run)], [run], []


@case("no train records with tokens, FLOPs and tokens/s")
def metrics_deeply_nested_line(tmp):
    run = _run_dir(tmp, ['{"event": "train", "x": ' + nested(50_000) + "}"], meta=nested(50_000))
    return ["savings", "--run", str(run)], [run], []


@case("no train records with tokens, FLOPs and tokens/s")
def metrics_text_counts(tmp):
    run = _run_dir(tmp, [json.dumps({**TRAIN, "tokens_per_s": "fast", "tokens_per_expert": [["a"]]})])
    return ["savings", "--run", str(run)], [run], []


# ---------------------------------------------------------------- numeric options
def _option_case(names: str, command: str, *options: str):
    def build(tmp: Path):
        src = SOURCE[0]
        argv = [command, str(src)] + ([str(tmp / "out")] if command != "generate" else []) + list(options)
        return argv, [src], [tmp / "out"]
    return names, build


for _name, (_names, _build) in {
    "grow_noise_inf": _option_case("argument --noise: must be a finite number", "grow", "--noise", "inf"),
    "grow_noise_nan": _option_case("argument --noise: must be a finite number", "grow", "--noise", "nan"),
    "grow_seed_negative": _option_case("argument --seed: must be >= 0", "grow", "--seed", "-1"),
    "grow_seed_huge": _option_case("argument --seed: must be at most", "grow", "--seed", "9" * 30),
    "upcycle_noise_nan": _option_case("argument --noise: must be a finite number", "upcycle", "--noise", "nan"),
    "upcycle_aux_loss_inf": _option_case("argument --aux-loss-coef: must be a finite", "upcycle",
                                         "--aux-loss-coef", "inf"),
    "upcycle_drop_ratio_above_one": _option_case("argument --drop-ratio: must be in [0, 1]", "upcycle",
                                                 "--drop-ratio", "2"),
    "generate_temperature_inf": _option_case("argument --temperature: must be a finite", "generate", "--ids", "1",
                                             "--temperature", "inf"),
    "unknown_option": _option_case("unrecognized arguments: --bogus", "grow", "--bogus"),
    "grow_verify_text_empty": _option_case("--verify-text: must not be empty", "grow", "--verify-text", ""),
    # Resources: estimated before anything is allocated or written.
    "generate_kv_cache_too_large": _option_case("--no-resource-check", "generate", "--ids", "1",
                                                "--max-new-tokens", str(10**12)),
    "grow_output_too_large": _option_case("--no-resource-check", "grow", "--hidden-size", str(2**24),
                                          "--num-heads", str(2**21)),
}.items():
    _build.__name__ = _name
    case(_names)(_build)


# ---------------------------------------------------------------- outputs that would destroy an input
@case("contains the input")
def grow_out_contains_src(tmp):
    (tmp / "parent").mkdir()
    src = _copy(SOURCE[0], tmp / "parent")
    return ["grow", str(src), str(tmp / "parent"), "--force", "--intermediate-size", "64"], [src], []


@case("is the input")
def upcycle_out_is_src(tmp):
    src = _copy(SOURCE[0], tmp)
    return ["upcycle", str(src), str(src), "--force"], [src], []


@case("lies inside the input")
def grow_out_inside_src(tmp):
    src = _copy(SOURCE[0], tmp)
    return ["grow", str(src), str(src / "grown"), "--intermediate-size", "64"], [src], [src / "grown"]


@case("lies inside the input")
def train_out_inside_init(tmp):
    src = _copy(SOURCE[0], tmp)
    recipe = recipe_file(tmp / "r.yaml", tiny_recipe(train={"max_steps": 2}))
    return (["train", "--recipe", str(recipe), "--out", str(src / "run"), "--init", str(src)], [src, recipe],
            [src / "run"])


@case("exists and is not a directory")
def grow_out_is_a_file(tmp):
    (tmp / "file").write_text("mine")
    return ["grow", str(SOURCE[0]), str(tmp / "file"), "--force"], [SOURCE[0], tmp / "file"], []


@case("file is not a directory")
def grow_out_under_a_file(tmp):
    (tmp / "file").write_text("mine")
    return ["grow", str(SOURCE[0]), str(tmp / "file" / "out")], [SOURCE[0], tmp / "file"], []


SOURCE: list[Path] = []  # the module's tiny checkpoint, set by the `source` fixture before the cases run


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name or ".partial-" in p.name]


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[c.id for c in BAD_INPUTS])
def test_a_bad_input_ends_in_one_error_line_and_writes_nothing(bad, source, tmp_path, capsys):
    SOURCE[:] = [source]
    argv, inputs, outputs = bad.build(tmp_path)
    before = fingerprint(*inputs)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert bad.names in lines[0], lines[0]
    assert len(lines[0]) < 600, f"an error line of {len(lines[0])} characters"
    assert "Traceback" not in err
    for path in outputs:
        assert not path.exists(), f"{path} was written"
    assert fingerprint(*inputs) == before, "an input changed"
    assert not _leftovers(tmp_path) and not _leftovers(source.parent)


def test_the_table_covers_every_class():
    names = " ".join(c.id for c in BAD_INPUTS)
    for kind in ("config", "index", "tensor", "weights_nan", "tokenizer", "recipe", "pipeline", "metrics",
                 "noise", "out", "too_large"):
        assert kind in names, kind


# ---------------------------------------------------------------- faults that take more than one call
FAULTS = ("second_writer", "resume_keeps_what_the_lab_did_not_write", "resume_falls_back_on_a_corrupt_checkpoint",
          "stale_temporaries_are_removed", "failed_fresh_run_leaves_nothing", "live_run_starts_once_in_private")


def _train(recipe: Path, out: Path, *extra: str) -> int:
    return main(["train", "--recipe", str(recipe), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-step run with a checkpoint at each step, to copy and break."""
    root = tmp_path_factory.mktemp("trained")
    recipe = recipe_file(root / "r.yaml", tiny_recipe(train={"max_steps": 2, "save_every": 1, "eval_every": 0,
                                                             "sample_tokens": 0, "keep_checkpoints": 2}))
    assert _train(recipe, root / "run") == 0
    return recipe, root / "run"


def test_second_writer(tmp_path, capsys):
    from lab.train.lock import RunLock

    recipe = recipe_file(tmp_path / "r.yaml", tiny_recipe(train={"max_steps": 1}))
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):  # another process writing the run (flock: a second open file conflicts even in-process)
        assert _train(recipe, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another process is writing this run" in err[0]
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_resume_keeps_what_the_lab_did_not_write(trained, tmp_path):
    import shutil

    recipe, run = trained
    out = Path(shutil.copytree(run, tmp_path / "run"))
    for hidden in (out / ".git", out / "checkpoints" / ".mine"):
        hidden.mkdir()
        (hidden / "keep").write_text("mine")
    (out / "checkpoints" / ".step-000009.partial-0123abcd").mkdir()  # a killed checkpoint write: the lab's own
    assert _train(recipe, out, "--resume", "--max-steps", "3") == 0
    assert (out / ".git" / "keep").is_file() and (out / "checkpoints" / ".mine" / "keep").is_file()
    assert not (out / "checkpoints" / ".step-000009.partial-0123abcd").exists()


def test_resume_falls_back_on_a_corrupt_checkpoint(trained, tmp_path, capsys):
    import shutil

    from train_fixtures import records

    recipe, run = trained
    out = Path(shutil.copytree(run, tmp_path / "run"))
    truncated_safetensors(out / "checkpoints" / "step-000002" / "model.safetensors")
    assert _train(recipe, out, "--resume", "--max-steps", "3") == 0
    assert "warning: checkpoint" in capsys.readouterr().err
    assert records(out, "resume")[-1]["from_step"] == 1
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3]


def test_stale_temporaries_are_removed(source, tmp_path):
    stale = tmp_path / ".out.tmp-999999999-deadbeef"  # a grow killed by SIGKILL: no process 999999999
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    legacy = tmp_path / ".out.tmp-0badc0de"
    legacy.mkdir()
    assert main(["grow", str(source), str(tmp_path / "out"), "--intermediate-size", "64"]) == 0
    assert not stale.exists() and not legacy.exists() and (tmp_path / "out" / "config.json").is_file()


def test_failed_fresh_run_leaves_nothing(tmp_path, capsys):
    recipe = recipe_file(tmp_path / "r.yaml", tiny_recipe(optim={"lr": 1e30, "warmup_steps": 0},
                                                          train={"max_steps": 3, "save_every": 0}))
    assert _train(recipe, tmp_path / "run") == 2
    assert "the loss is" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_live_run_starts_once_in_private(monkeypatch, tmp_path):
    import os
    import subprocess
    import tempfile
    import threading

    pytest.importorskip("streamlit")
    from lab.dashboard import live_run

    started = []

    class FakeProcess:
        returncode = None

        def __init__(self, cmd, **kwargs):
            started.append(cmd)

        def poll(self):
            return None

    job = {"lock": threading.Lock()}
    monkeypatch.setattr(live_run, "_job", lambda: job)
    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / "efficientscale-live" / "victim"
    planted.parent.mkdir()
    threads = [threading.Thread(target=live_run.start, args=("tiny.yaml", 10)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1
    home = job["dir"].parent
    assert home.parent == tmp_path and home.name.startswith("efficientscale-live-tiny-")
    assert oct(os.stat(home).st_mode & 0o777) == "0o700" and job["log"].parent == home


def test_a_stage_mistake_is_named_by_its_key_not_parsed_from_a_message():
    from lab.errors import LabError, RecipeError
    from lab.pipeline import load_pipeline
    from lab.train import load_recipe

    with pytest.raises(RecipeError) as caught:
        load_recipe({"run": "r", "model": {"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64},
                     "optim": {"lr": -1}})
    assert (caught.value.key, str(caught.value)) == ("optim.lr", "recipe optim.lr: must be > 0, got -1")
    values = {"pipeline": "p", "stages": [{"name": "dense", "stage": "preparation",
                                           "model": {"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64},
                                           "optim": {"lr": -1}}]}
    with pytest.raises(LabError, match=r"stages\[0\]\.optim\.lr: must be > 0, got -1"):
        load_pipeline(values)
