"""The EfficientScale pipeline (lab.pipeline) on a model that trains a step in milliseconds: the transitions
keep the loss where the paper says they do, the merged metrics run on cumulative counters, a stopped
pipeline resumes to the same result, and bad recipes fail before any work."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from lab.errors import LabError
from lab.pipeline import load_pipeline, pipeline_report, run_pipeline
from lab.runs import load_run

MODEL = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "max_seq_len": 64}
SMALL = {
    "pipeline": "test-pipeline",
    "seed": 0,
    "data": {"seq_len": 32, "batch_size": 4},
    "optim": {"lr": 1e-2, "warmup_steps": 1},
    "train": {"max_steps": 4, "eval_every": 2, "eval_sequences": 2, "save_every": 2, "log_every": 1,
              "sample_tokens": 0},
    "stages": [
        {"name": "dense", "stage": "preparation", "model": MODEL, "train": {"max_steps": 2}},
        # FPI width only (integer ratio, same depth): the grown model computes the same function.
        {"name": "wide", "stage": "scale-up", "grow": {"method": "fpi", "dim": 64, "n_heads": 8, "ffn_dim": 128},
         "optim": {"lr": 5e-3}},
        {"name": "moe", "stage": "scale-out", "upcycle": {"n_experts": 4, "top_k": 2}, "train": {"max_steps": 2}},
    ],
    "baseline": {"optim": {"lr": 5e-3}},
}


def small(**changes) -> dict:
    values = copy.deepcopy(SMALL)
    values.update(changes)
    return values


def records(out: Path, event: str | None = None) -> list[dict]:
    rs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rs if event is None or r["event"] == event]


# A pipeline of three stages and a baseline takes a few seconds on an idle CPU (each stage loads the
# data, evaluates and saves checkpoints), more on a shared one: the tests that run one are marked slow.
@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "run"
    run_pipeline(small(), out, progress=False)
    return out


@pytest.mark.slow
def test_layout_and_cumulative_counters(straight):
    assert (straight / "meta.json").is_file()
    for name in ("dense", "wide", "moe"):
        assert (straight / "stages" / name / "final" / "config.json").is_file()
    assert (straight / "baseline" / "metrics.jsonl").is_file()
    rs = records(straight)
    assert {r["run"] for r in rs} == {"test-pipeline"}
    assert [r["stage"] for r in rs if r["event"] == "transition"] == ["scale-up", "scale-out"]
    train = [r for r in rs if r["event"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))  # 2 + 4 + 2 steps, one count across stages
    assert [r["stage_step"] for r in train] == [1, 2, 1, 2, 3, 4, 1, 2]
    for key in ("tokens", "flops"):
        values = [r[key] for r in train]
        assert values == sorted(values) and len(set(values)) == len(values)
    # Each stage's own run counts from zero; the merged file adds the stages before it.
    own = [json.loads(x) for x in (straight / "stages" / "moe" / "metrics.jsonl").read_text().splitlines()]
    last_wide = [r for r in train if r["stage_name"] == "wide"][-1]
    first_moe = [r for r in train if r["stage_name"] == "moe"][0]
    own_first = [r for r in own if r["event"] == "train"][0]
    assert first_moe["flops"] == pytest.approx(last_wide["flops"] + own_first["flops"])
    meta = load_run(straight).meta
    assert [s["summary"]["step"] for s in meta["stages"]] == [2, 4, 2]


@pytest.mark.slow
def test_transitions_keep_the_loss(straight):
    """FPI width growth by an integer ratio and sparse upcycling (top-k then softmax) keep the function, so
    the first evaluation of the new model equals the last one of the previous (AquilaMoE 2.2.1, Komatsuzaki)."""
    for t in records(straight, "transition"):
        before, after = t["val_loss_before"], t["val_loss"]
        assert before.keys() == after.keys() and len(before) >= 2
        torch.testing.assert_close(torch.tensor(list(after.values())), torch.tensor(list(before.values())))
    report = pipeline_report(straight)
    assert [r.before is not None for r in report.transitions] == [False, True, True]
    upcycling = report.transitions[2]
    assert upcycling.after == pytest.approx(upcycling.before, rel=1e-6)
    assert upcycling.recovered_at is None or upcycling.recovered_at > 0  # counted once training began
    assert report.baseline_flops == pytest.approx(report.final_flops, rel=0.2)  # equal FLOPs, to a step


@pytest.mark.slow
def test_final_moe_opens_in_transformers(straight):
    import transformers

    from lab.checkpoint import load_pretrained

    path = straight / "stages" / "moe" / "final"
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    ours = load_pretrained(path, dtype=torch.float32).eval()
    ids = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_growth_that_changes_the_function_is_seen(tmp_path):
    """AKI-Pro growth does not keep the function (new units copy the next layer's): the transition record
    shows it, so the check above can fail."""
    values = small()
    del values["baseline"]
    values["stages"] = values["stages"][:2]
    values["stages"][1]["grow"] = {"method": "aki-pro", "dim": 64, "n_heads": 8, "ffn_dim": 128, "n_layers": 3}
    values["stages"][1]["train"] = {"max_steps": 1}
    run_pipeline(values, tmp_path / "run", progress=False)
    (t,) = records(tmp_path / "run", "transition")
    with pytest.raises(AssertionError):
        torch.testing.assert_close(torch.tensor(list(t["val_loss"].values())),
                                   torch.tensor(list(t["val_loss_before"].values())))


@pytest.mark.slow
def test_stopped_pipeline_resumes_to_the_same_result(straight, tmp_path, monkeypatch):
    import lab.pipeline.run as runner
    from lab.train import train

    out = tmp_path / "run"

    class Killed(Exception):
        pass

    def stop_in_wide(recipe, run_dir, init_from, progress, resume):
        if run_dir.name == "wide":  # two of its four steps (a checkpoint at step 2), then the process dies
            train(recipe, run_dir, max_steps=2, init_from=init_from, progress=False)
            raise Killed
        return real(recipe, run_dir, init_from, progress, resume)

    real = runner._train
    monkeypatch.setattr(runner, "_train", stop_in_wide)
    with pytest.raises(Killed):
        run_pipeline(small(), out, progress=False)
    assert [r["stage_step"] for r in records(out, "train")][-2:] == [1, 2]  # merged even though it died
    monkeypatch.setattr(runner, "_train", real)
    with pytest.raises(LabError, match="--resume"):
        run_pipeline(small(), out, progress=False)
    run_pipeline(small(), out, resume=True, progress=False)

    def comparable(rs):
        skip = {"time", "tokens_per_s", "mfu"}
        kept = ("train", "eval", "transition")
        return [{k: v for k, v in r.items() if k not in skip} for r in rs if r["event"] in kept]

    a, b = comparable(records(straight)), comparable(records(out))
    assert len(a) == len(b)  # no duplicates of the steps run twice
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                assert y[k] == pytest.approx(x[k], rel=1e-5, abs=1e-6), k
            else:
                assert y[k] == x[k], k
    from safetensors.torch import load_file

    for part in ("stages/moe/final", "baseline/final"):
        wa, wb = load_file(straight / part / "model.safetensors"), load_file(out / part / "model.safetensors")
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resume_refuses_another_recipe_and_an_empty_dir(straight, tmp_path):
    other = small()
    other["stages"][2]["upcycle"] = {"n_experts": 8, "top_k": 2}
    with pytest.raises(LabError, match="different recipe"):
        run_pipeline(other, straight, resume=True, progress=False)
    with pytest.raises(LabError, match="nothing to resume"):
        run_pipeline(small(), tmp_path / "new", resume=True, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(LabError, match="not an empty directory"):
        run_pipeline(small(), tmp_path / "busy", progress=False)


def test_baseline_spends_the_pipelines_flops():
    p = load_pipeline(small())
    from lab.flops import flops_per_token

    d = p.baseline.data
    per_step = d.batch_size * d.seq_len * flops_per_token(p.stages[-1].config, d.seq_len)
    assert p.baseline.model == p.stages[-1].config.replace(dtype="float32")
    assert abs(p.baseline.train.max_steps * per_step - p.flops) <= per_step / 2


def _broken(path: str, value) -> dict:
    """SMALL with the key at `path` (dots; [i] for list items) set to `value` (None deletes it)."""
    values = small()
    node, keys = values, path.replace("]", "").replace("[", ".").split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if value is None:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return values


@pytest.mark.parametrize("path, value, message", [
    ("stages[1].grow.method", "bogus", "pipeline stages[1].grow.method: must be one of fpi, aki, aki-pro"),
    ("stages[1].grow.depth", "sideways", "pipeline stages[1].grow.depth: must be one of"),
    ("stages[1].grow.dim", 16, "pipeline stages[1].grow"),
    ("stages[1].grow.n_layers", "six", "pipeline stages[1].grow.n_layers: must be an integer"),
    ("stages[2].upcycle.top_k", 9, "pipeline stages[2].upcycle"),
    ("stages[2].upcycle.routing", "bogus", "pipeline stages[2].upcycle"),
    ("stages[2].upcycle.experts", 4, "pipeline stages[2].upcycle.experts: unknown key"),
    ("stages[0].optim.lr", -1, "pipeline stages[0].optim.lr: must be > 0"),
    ("stages[1].data", {"seq_len": 64}, "pipeline stages[1].data.seq_len: unknown key"),
    ("stages[1].train", {"eval_sequences": 4}, "pipeline stages[1].train.eval_sequences"),
    ("stages[0].model", None, "pipeline stages[0]: give exactly one of model, init_from"),
    ("stages[1].model", MODEL, "pipeline stages[1]: give exactly one of grow, upcycle"),
    ("stages[1].stage", "scale-sideways", "pipeline stages[1].stage: must be one of"),
    ("stages[1].name", "dense", "pipeline stages[1].name: 'dense' is used twice"),
    ("stages[1].name", "../up", "pipeline stages[1].name: must be a directory name"),
    ("stages[0].init_from", "/no/such/checkpoint", "pipeline stages[0]: give exactly one"),
    ("stages", [], "pipeline stages: must be a non-empty list"),
    ("train.max_steps", 0, "pipeline train.max_steps: must be > 0"),
    ("data.seq_len", 128, "pipeline stages[0].data.seq_len: must be <="),
    ("baseline.train", {"max_step": 3}, "pipeline baseline.train.max_step"),
    ("pipeline", None, "pipeline pipeline: must name the pipeline"),
    ("bogus", 1, "pipeline recipe.bogus: unknown key"),
    ("stages[1].train.trainable", "new-blocks", "pipeline stages[1].train.trainable: new-blocks trains the blocks"),
    ("stages[0].train.trainable", "new-blocks", "pipeline stages[0].train.trainable: new-blocks trains the blocks"),
    ("stages[2].upcycle.balance", "sideways", "pipeline stages[2].upcycle.balance: must be one of"),
])
def test_bad_recipes_fail_naming_the_key(path, value, message):
    with pytest.raises(LabError) as e:
        load_pipeline(_broken(path, value))
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_cli_refuses_a_bad_recipe_before_any_work(tmp_path, capsys):
    import yaml

    from lab.cli import main

    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(_broken("stages[1].grow.method", "bogus")))
    out = tmp_path / "out"
    assert main(["pipeline", "--recipe", str(recipe), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: pipeline stages[1].grow.method: must be one of fpi, aki, aki-pro, msg, got 'bogus'"]
    assert not out.exists()


def test_cli_check_prints_the_plan(tmp_path, capsys):
    import yaml

    from lab.cli import main

    recipe = tmp_path / "ok.yaml"
    recipe.write_text(yaml.safe_dump(small()))
    assert main(["pipeline", "--recipe", str(recipe), "--check"]) == 0
    out = capsys.readouterr().out
    assert "wide (scale-up): fpi width" in out and "baseline:" in out


@pytest.mark.parametrize("name", ["efficientscale-tiny", "efficientscale-mid", "aquilamoe"])
def test_shipped_recipes_validate(name):
    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml"  # shipped: a missing one fails
    p = load_pipeline(path)
    assert [s.label for s in p.stages] == ["preparation", "scale-up", "scale-out"]
    assert p.stages[-1].config.is_moe and p.baseline is not None


@pytest.mark.slow
def test_two_processes_run_the_pipeline_as_one(straight, tmp_path):
    """Under torchrun every process trains every stage; rank 0 alone grows, upcycles and writes the
    pipeline's files, and the result is the single process's (FSDP on 2 gloo processes)."""
    import os
    import subprocess
    import sys

    import yaml

    recipe = tmp_path / "small.yaml"
    recipe.write_text(yaml.safe_dump(small()))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "lab", "pipeline", "--recipe", str(recipe), "--out", str(tmp_path / "two"),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("pipeline done") == 1  # rank 0 speaks for all
    ours = [r for r in records(tmp_path / "two") if r["event"] in ("eval", "transition")]
    one = [r for r in records(straight) if r["event"] in ("eval", "transition")]
    assert [(r["event"], r["step"]) for r in ours] == [(r["event"], r["step"]) for r in one]
    for a, b in zip(ours, one):
        assert a["val_loss_mean"] == pytest.approx(b["val_loss_mean"], rel=1e-4)
