"""Seeded experiments and their claims: the fixed rule exactly, the claims file's shape, each experiment on a
tiny source (two seeds of a couple of steps), resume, the invariants C1 and C9 exactly, and one-line refusals.

Every experiment here reads a small slice of the shipped corpus (a `corpus` setting), so that a run's data
loads in milliseconds; nothing reads the big corpus or data/sources.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import lab
from lab.cli import main
from lab.data import DEFAULT_CORPUS
from lab.errors import LabError
from lab.experiments import claims as claims_module
from lab.experiments.catalog import MODULES, experiment
from lab.experiments.claims import CLAIMS, KIND_RULES, RULE, RULE_FOOTER, evaluate, verdict
from lab.experiments.runner import MEASUREMENTS_FILE, STATE_FILE, run_experiment
from lab.experiments.export import export_experiment
from lab.experiments.settings import make_settings, record_settings
from lab.runs import load_run
from train_fixtures import records, tiny_recipe


# ---------------------------------------------------------------------------- the rule, exactly
@pytest.mark.parametrize("a, b, expected", [
    ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], "holds"),  # d = 1 on every seed, no spread
    ([0.0, 0.0, 0.0], [1.0, 1.0, 0.1], "holds"),  # mean 0.7 > 2 * 0.5196 / sqrt(3) = 0.6
    ([0.0, 0.0, 0.0], [3.0, 1.0, 0.1], "inconclusive"),  # all positive, but mean 1.37 < 2 * 1.48 / sqrt(3) = 1.71
    ([0.0, 0.0, 0.0], [1.0, 1.0, -0.1], "inconclusive"),  # one seed against
    ([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], "contradicted"),  # the mirror holds
    ([1.0, 1.0, 0.1], [0.0, 0.0, 0.0], "contradicted"),
    ([3.0, 1.0, 0.1], [0.0, 0.0, 0.0], "inconclusive"),
    ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "inconclusive"),  # d = 0 is neither lower nor higher
])
def test_lower_rule(a, b, expected):
    assert verdict(a, b, "lower") == expected


@pytest.mark.parametrize("a, b, tolerance, expected", [
    ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.0, "holds"),
    ([1.0, 1.0, 1.0], [1.5, 0.5, 1.25], 0.5, "holds"),  # a gap of exactly the tolerance is within it
    ([1.0, 1.0, 1.0], [1.5, 0.5, 1.75], 0.5, "inconclusive"),  # two seeds within, one out
    ([1.0, 1.0, 1.0], [1.75, 0.25, 2.0], 0.5, "contradicted"),  # out on every seed
])
def test_equal_rule(a, b, tolerance, expected):
    assert verdict(a, b, "equal", tolerance) == expected


@pytest.mark.parametrize("a, b, kind, tolerance, message", [
    ([1.0, 1.0], [2.0, 2.0], "lower", None, "at least 3"),
    ([1.0, 1.0, 1.0], [2.0, 2.0], "lower", None, "differ in length"),
    ([1.0, 1.0, math.nan], [2.0, 2.0, 2.0], "lower", None, "finite"),
    ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], "equal", None, "tolerance"),
    ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], "higher", None, "must be one of"),
])
def test_rule_refusals(a, b, kind, tolerance, message):
    with pytest.raises(LabError, match=message):
        verdict(a, b, kind, tolerance)


def test_claims_are_data_with_the_issue_ids():
    assert [c.id for c in CLAIMS] == [f"C{i}" for i in range(1, 16)] + ["C16", "C16b", "C17", "C17b", "C18"]
    for c in CLAIMS:
        assert c.kind in ("lower", "equal", "not_above") and c.experiment in MODULES and c.text and c.paper
        assert (c.tolerance == 1e-4) == (c.kind == "equal")
        assert (c.tolerance is not None) == (c.kind in ("equal", "not_above"))
    assert [c.id for c in CLAIMS if c.kind == "equal"] == ["C1", "C9", "C17"]
    assert [(c.id, c.tolerance) for c in CLAIMS if c.kind == "not_above"] == [("C16b", 0.01)]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a 2-core machine shared with other work, two threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first few thousand characters of every domain and split of the shipped corpus."""
    budget: dict = {}
    lines = []
    for line in DEFAULT_CORPUS.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        key = (record["domain"], record["split"])
        if budget.get(key, 0) < (6000 if record["split"] == "train" else 3000):
            lines.append(line)
            budget[key] = budget.get(key, 0) + len(record["text"])
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory, corpus) -> Path:
    """A tiny dense source (M(2, 32), GQA 4 heads in 2 groups), trained 6 steps on the slice."""
    run = tmp_path_factory.mktemp("source") / "run"
    lab.train.train(tiny_recipe(data={"corpus": str(corpus)}, train={"max_steps": 6, "eval_every": 6,
                                                                     "save_every": 6, "sample_tokens": 0}),
                    run, progress=False)
    return run / "final"


def tiny(name: str, source: Path, corpus: Path, **changes):
    values = {"source": str(source), "corpus": str(corpus), "tokens": None, "seq_len": 32, "batch_size": 4,
              "eval_sequences": 2,
              "evaluations": 2, "checkpoint_every": 100, **changes}
    return make_settings(experiment(name).Settings, values)


def run_tiny(name, out, seeds, settings, lines=None):
    report = (lambda line: lines.append(line)) if lines is not None else (lambda line: None)
    return run_experiment(experiment(name), settings, out, seeds, progress=False, report=report)


def check_layout(out: Path, name: str, seeds: list[int]) -> dict[int, dict]:
    """Every run of every seed is a run directory lab.runs reads, and each seed has its measurements."""
    module = experiment(name)
    assert json.loads((out / "settings.json").read_text())["experiment"] == name
    measured = {}
    for seed in seeds:
        directory = out / f"seed-{seed}"
        state = json.loads((directory / STATE_FILE).read_text())
        runs = [r.name for r in module.plan_runs(make_settings(module.Settings, json.loads(
            (out / "settings.json").read_text())["settings"]), seed, directory)]
        assert list(state["done"]) == runs
        for run in runs:
            loaded = load_run(directory / run)
            assert loaded.meta and loaded.events("eval") and not loaded.metrics.problems
            assert not list((directory / run).rglob("checkpoints"))  # a finished run keeps final/ only
        values = json.loads((directory / MEASUREMENTS_FILE).read_text())
        assert values["experiment"] == name and values["seed"] == seed
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values["values"].values())
        measured[seed] = values["values"]
    return measured


def claim_keys(name: str) -> set[str]:
    return {k for c in CLAIMS if c.experiment == name for k in (c.a_measurement, c.b_measurement)}


# ---------------------------------------------------------------------------- the experiments
@pytest.fixture(scope="module")
def table1_dir(tmp_path_factory, source, corpus) -> Path:
    out = tmp_path_factory.mktemp("table1") / "out"
    run_tiny("table1", out, [0, 1], tiny("table1", source, corpus, steps=2))
    return out


def test_table1_measures_what_its_claims_read_and_c1_is_exact(table1_dir):
    measured = check_layout(table1_dir, "table1", [0, 1])
    for seed, values in measured.items():
        assert claim_keys("table1") <= set(values)
        # FPI width-only with an integer ratio and the cyclic map computes the source's function.
        assert abs(values["fpi-width/grown_loss"] - values["source/loss"]) <= 1e-5
        assert values["worst-growth/grown_loss"] == max(values[f"{k}/grown_loss"] for k in
                                                        ("fpi-stack", "fpi-interpolate", "aki-stack", "aki-pro"))
    # The seed varies the from-scratch initialisation and the data order.
    assert measured[0]["random/grown_loss"] != measured[1]["random/grown_loss"]
    assert measured[0]["aki-pro/trained_loss"] != measured[1]["aki-pro/trained_loss"]
    assert json.loads((table1_dir / "seed-1" / "aki-pro" / "meta.json").read_text())["recipe"]["seed"] == 1
    # Rows outside `trained_rows` are evaluated right after growth and never trained.
    assert "fpi-stack/trained_loss" not in measured[0] and "aki-pro/trained_loss" in measured[0]
    records = [json.loads(line) for line in (table1_dir / "seed-0" / "fpi-stack" / "metrics.jsonl").open()]
    assert [r["event"] for r in records] == ["eval"] and records[0]["step"] == 0


def test_resume_skips_finished_runs_and_continues_an_interrupted_one(table1_dir, source, corpus):
    settings = tiny("table1", source, corpus, steps=2)
    directory = table1_dir / "seed-1"
    before = json.loads((directory / MEASUREMENTS_FILE).read_text())["values"]
    # As if killed after aki-pro's first step: its state entry and last step gone, its checkpoint at step 1 kept.
    state = json.loads((directory / STATE_FILE).read_text())
    del state["done"]["aki-pro"]
    (directory / STATE_FILE).write_text(json.dumps(state))
    run = next(r for r in experiment("table1").plan_runs(settings, 1, directory.resolve()) if r.name == "aki-pro")
    import shutil

    shutil.rmtree(directory / "aki-pro")
    lab.train.train(run.recipe, directory / "aki-pro", max_steps=1, progress=False)
    lines: list[str] = []
    run_tiny("table1", table1_dir, [0, 1], settings, lines)
    skipped = [line for line in lines if line.endswith("done earlier, skipped")]
    # Seed 0 is finished as a whole; of seed 1 every run but aki-pro is.
    assert "seed 0: measured earlier, skipped" in lines
    assert len(skipped) == 7 - 1 and any(line.endswith("aki-pro") for line in lines)
    assert [r["from_step"] for r in records(directory / "aki-pro", "resume")] == [1]
    assert [r["step"] for r in records(directory / "aki-pro", "train")] == [1, 2]
    after = json.loads((directory / MEASUREMENTS_FILE).read_text())["values"]
    assert after["aki-pro/trained_loss"] == pytest.approx(before["aki-pro/trained_loss"], abs=1e-6)


def test_a_resume_under_other_settings_is_refused(table1_dir, source, corpus):
    with pytest.raises(LabError, match="was started with other settings \\(steps 2 there, 3 now\\)"):
        run_tiny("table1", table1_dir, [0], tiny("table1", source, corpus, steps=3))
    with pytest.raises(LabError, match="holds experiment 'table1', not 'table2'"):
        run_tiny("table2", table1_dir, [0], tiny("table2", source, corpus))


def test_table2_integer_width_is_exact_and_the_others_are_not(tmp_path, source, corpus):
    out = tmp_path / "out"
    run_tiny("table2", out, [0, 1], tiny("table2", source, corpus))
    measured = check_layout(out, "table2", [0, 1])
    for values in measured.values():
        assert claim_keys("table2") <= set(values)
        assert abs(values["width-integer/grown_loss"] - values["source/loss"]) <= 1e-5
        assert values["width-noninteger/grown_loss"] != values["source/loss"]
    meta = json.loads((out / "seed-0" / "width-depth" / "meta.json").read_text())
    assert (meta["model"]["dim"], meta["model"]["n_heads"], meta["model"]["n_layers"]) == (48, 6, 3)


def test_upcycle_c9_is_exact_and_the_dense_run_spends_the_moe_flops(tmp_path, source, corpus):
    out = tmp_path / "out"
    run_tiny("upcycle", out, [0, 1], tiny("upcycle", source, corpus, steps=4))
    measured = check_layout(out, "upcycle", [0, 1])
    for seed, values in measured.items():
        assert claim_keys("upcycle") <= set(values)
        # top-k then softmax, no noise, no drop: the upcycled MoE computes the dense model.
        assert abs(values["topk-softmax/start_loss"] - values["dense/start_loss"]) <= 1e-5
        per_step = values["topk-softmax/flops"] / 4
        assert abs(values["dense/flops"] - values["topk-softmax/flops"]) <= per_step
        assert all(values[f"{k}/load_cv"] >= 0 for k in ("topk-softmax", "no-aux-loss"))
    # The seed varies the routers' initial rows.
    routers = [lab.load_pretrained(out / f"seed-{s}" / "init" / "topk-softmax").layers[0].mlp.router.weight
               for s in (0, 1)]
    assert not torch.equal(*routers)


def test_pipeline_against_its_best_baseline(tmp_path, source, corpus):
    out = tmp_path / "out"
    settings = tiny("pipeline", source, corpus, dense_steps=4, grow_steps=4, moe_steps=4)
    run_tiny("pipeline", out, [0, 1], settings)
    measured = check_layout(out, "pipeline", [0, 1])
    for values in measured.values():
        assert claim_keys("pipeline") <= set(values)
        finals = {lr: values[f"baseline-lr{lr:g}/final_loss"] for lr in settings.baseline_lrs}
        assert values["baseline/best_loss"] == min(finals.values())
        assert finals[values["baseline/best_lr"]] == values["baseline/best_loss"]
        # Equal training FLOPs, up to one baseline step.
        assert values["baseline-lr0.001/flops"] == pytest.approx(values["pipeline/flops"], rel=0.2)
        assert values["grow/quarter_step"] == values["upcycle/quarter_step"] == 1
        worst = max(("grow", "upcycle"), key=lambda k: values[f"{k}/quarter_loss"] - values[f"{k}/before_loss"])
        assert values["recovery/worst_quarter_loss"] == values[f"{worst}/quarter_loss"]


def test_seeds_reach_growth_maps(tmp_path, source, corpus):
    """With bert2BERT's random map, each seed grows the source differently."""
    settings = tiny("table1", source, corpus, map="random")
    weights = []
    for seed in (0, 1):
        run = next(r for r in experiment("table1").plan_runs(settings, seed, tmp_path) if r.name == "fpi-stack")
        run.make_init(tmp_path / f"grown-{seed}")
        weights.append(lab.load_pretrained(tmp_path / f"grown-{seed}").layers[0].mlp.gate_proj.weight)
    assert not torch.equal(*weights)


def test_tokens_go_into_the_data_section_only_when_given(tmp_path, source, corpus):
    from lab.experiments.training import data_section

    assert "tokens" not in data_section(tiny("table1", source, corpus))
    (tmp_path / "tokens").mkdir()
    assert data_section(tiny("table1", source, corpus, tokens=str(tmp_path / "tokens")))["tokens"] == str(
        tmp_path / "tokens")


# ---------------------------------------------------------------------------- the claims file
def fake_experiment(out: Path, name: str, seeds: list[int], values) -> Path:
    record_settings(out, name, make_settings(experiment(name).Settings))
    for seed in seeds:
        (out / f"seed-{seed}").mkdir()
        (out / f"seed-{seed}" / MEASUREMENTS_FILE).write_text(json.dumps(
            {"experiment": name, "seed": seed, "values": values(seed)}))
    return out


def fake_experiments(root: Path, seeds=(0, 1, 2)) -> list[Path]:
    """Every experiment, its claims' measurements made up so that verdicts differ."""
    def values(name):
        def make(seed):
            keys = sorted(claim_keys(name))
            return {k: 1.0 + 0.1 * i + 0.01 * seed * (i % 3) for i, k in enumerate(keys)}
        return make

    return [fake_experiment(root / name, name, list(seeds), values(name)) for name in MODULES]


def test_claims_file_shape_and_every_verdict_recomputes(tmp_path):
    result = evaluate(fake_experiments(tmp_path), report=lambda line: None)
    assert result["rule"] == RULE
    assert [c["id"] for c in result["claims"]] == [c.id for c in CLAIMS]
    for entry in result["claims"]:
        assert {"id", "text", "paper", "kind", "a", "b", "seeds", "a_values", "b_values", "verdict"} <= set(entry)
        assert ("tolerance" in entry) == (entry["kind"] in ("equal", "not_above"))
        assert entry["seeds"] == [0, 1, 2] and len(entry["a_values"]) == len(entry["b_values"]) == 3
        assert entry["verdict"] == verdict(entry["a_values"], entry["b_values"], entry["kind"], entry.get("tolerance"))
        constant = len(set(entry["a_values"])) == len(set(entry["b_values"])) == 1
        assert entry["same_on_every_seed"] is constant
    assert {e["verdict"] for e in result["claims"]} >= {"holds", "contradicted"}
    assert {e["same_on_every_seed"] for e in result["claims"]} == {True, False}  # the made-up values have both


def test_claims_command_writes_the_file_and_refuses_too_few_seeds(tmp_path, capsys):
    dirs = fake_experiments(tmp_path / "three")
    assert main(["experiments", "claims", *map(str, dirs), "--json", str(tmp_path / "claims.json"),
                 "--markdown", str(tmp_path / "claims.md")]) == 0
    printed = capsys.readouterr().out
    assert "C15" in printed and "mean b-a" in printed
    written = json.loads((tmp_path / "claims.json").read_text())
    assert written == json.loads(json.dumps(evaluate(dirs, report=lambda line: None)))
    table = (tmp_path / "claims.md").read_text().splitlines()
    assert len(table) == 2 + len(CLAIMS)  # header, rule, one row per claim
    for row, entry in zip(table[2:], written["claims"]):
        assert row.startswith(f"| {entry['id']}: ") and f"**{entry['verdict']}**" in row
    assert main(["experiments", "claims", *map(str, dirs), "--json", str(tmp_path / "no" / "claims.json")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "no").exists()
    two = fake_experiments(tmp_path / "two", seeds=(0, 1))
    assert main(["experiments", "claims", str(two[0])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: C1 (table1): 2 seeds: a claim needs at least 3") and len(err.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["experiments", "run", "table9", "--seeds", "1", "--out", "OUT"], "unknown experiment 'table9'"),
    (["experiments", "run", "table1", "--seeds", "1", "--out", "OUT", "--source", "/no/such"],
     "error: the source checkpoint: /no/such: not a directory"),
    (["experiments", "run", "table1", "--seeds", "1", "--out", "OUT", "--set", "stepz=3"], "setting stepz: unknown"),
    (["experiments", "run", "table1", "--seeds", "1", "--out", "OUT", "--set", "steps=x"], "must be an integer"),
    (["experiments", "run", "table1", "--seeds", "1", "--out", "OUT", "--set", "trained_rows=aki-pro,random"],
     "setting trained_rows: must be one of fpi-width"),
    (["experiments", "run", "pipeline", "--seeds", "1", "--out", "OUT", "--steps", "3"], "no single --steps"),
    (["experiments", "run", "pipeline", "--seeds", "1", "--out", "OUT", "--set", "baseline_lrs=1e-3,2e-3"],
     "at least 3 different learning rates"),
    (["experiments", "claims", "/no/such/dir"], "error: /no/such/dir: not a directory"),
])
def test_bad_input_gives_one_error_line_and_exit_2(tmp_path, capsys, args, message):
    assert main([str(tmp_path / "out") if a == "OUT" else a for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_list_names_every_experiment_and_its_defaults(capsys):
    assert main(["experiments", "list"]) == 0
    out = capsys.readouterr().out
    for name in MODULES:
        assert f"{name}: " in out
    assert "baseline_lrs" in out and "[0.00025, 0.0005, 0.001]" in out


def test_export_keeps_metrics_meta_and_measurements_only(tmp_path, table1_dir, capsys):
    assert main(["experiments", "export", str(table1_dir), str(tmp_path / "light")]) == 0
    light = tmp_path / "light"
    names = {p.name for p in light.rglob("*") if p.is_file()}
    assert names == {"settings.json", "measurements.json", "state.json", "metrics.jsonl", "meta.json"}
    assert str(table1_dir.resolve()) not in (light / "seed-0" / "aki-pro" / "meta.json").read_text()
    result = claims_module.read_measurements([light], report=lambda line: None)
    assert set(result["table1"]) == {0, 1}


def test_an_exported_experiment_copied_back_resumes_with_the_seeds_it_lacks(tmp_path, table1_dir, source,
                                                                            corpus):
    import shutil

    light = tmp_path / "light"
    export_experiment(table1_dir, light)
    out = tmp_path / "out"
    shutil.copytree(light, out)
    # As if seed 1 had been exported half-way: aki-pro not done, no measurements yet.
    (out / "seed-1" / MEASUREMENTS_FILE).unlink()
    state = json.loads((out / "seed-1" / STATE_FILE).read_text())
    del state["done"]["aki-pro"]
    (out / "seed-1" / STATE_FILE).write_text(json.dumps(state))
    shutil.rmtree(out / "seed-1" / "aki-pro")
    lines: list[str] = []
    measured = run_tiny("table1", out, [0, 1], tiny("table1", source, corpus, steps=2), lines)
    assert "seed 0: measured earlier, skipped" in lines
    assert not any(line.startswith("seed 0,") for line in lines)  # no run of seed 0 touched
    ran = [line for line in lines if line.startswith("seed 1,") and not line.endswith("skipped")]
    assert ran == ["seed 1, run 6/7 aki-pro"]
    assert (out / "seed-1" / "aki-pro" / "final").is_dir() and not (out / "seed-0" / "aki-pro" / "final").exists()
    before = json.loads((table1_dir / "seed-1" / MEASUREMENTS_FILE).read_text())["values"]
    assert measured[1] == pytest.approx(before, abs=1e-6)


# ---------------------------------------------------------------------------- the shipped claims
def test_the_shipped_claims_are_the_rule_applied_to_their_values_and_the_readme_shows_them():
    from lab.experiments.claims import format_markdown
    from lab.paths import DATA_DIR, ROOT

    shipped = json.loads((DATA_DIR / "claims.json").read_text())  # committed: a missing file fails
    other_seeds = json.loads((DATA_DIR / "claims-seed-1000.json").read_text())
    assert shipped["claims"] and RULE_FOOTER in shipped["rule"] and RULE_FOOTER in other_seeds["rule"]
    for judged in (shipped, other_seeds):
        for entry in judged["claims"]:
            # Each file holds the rule of every kind it judges, in today's words (a file judged before a kind
            # was added holds the rule without that kind: the words of the older kinds have not changed).
            assert KIND_RULES[entry["kind"]] in judged["rule"]
            assert len(entry["seeds"]) >= 3
            assert entry["verdict"] == verdict(entry["a_values"], entry["b_values"], entry["kind"],
                                               entry.get("tolerance"))
    # Other seeds give no claim the opposite verdict.
    opposite = {("holds", "contradicted"), ("contradicted", "holds")}
    verdicts = {e["id"]: e["verdict"] for e in other_seeds["claims"]}
    assert set(verdicts) == {e["id"] for e in shipped["claims"]}  # every claim judged on both sets of seeds
    assert not [e["id"] for e in shipped["claims"] if (e["verdict"], verdicts.get(e["id"])) in opposite]
    table = format_markdown(shipped["claims"]) + "\n"
    assert (DATA_DIR / "claims.md").read_text() == table
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("<!-- claims table: data/claims.md -->\n")[1].split("<!-- end of claims table -->")[0]
    assert shown == table
