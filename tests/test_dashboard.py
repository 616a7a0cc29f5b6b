"""The dashboard under Streamlit's AppTest: every page renders, the savings page computes the paper's
factors and follows edits, uploads are parsed forgivingly, an empty runs directory is a message."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from dashboard_fixtures import pipeline_records, runs_root, write_run
from lab.dashboard import sources
from lab.flops import savings
from lab.paper import TABLE6, TABLE6_SCRATCH
from lab.runs import find_runs
from train_fixtures import tiny_recipe

REPO = Path(__file__).resolve().parent.parent
PAGES = ("overview", "loss_curves", "expert_load", "compute_savings", "growth_explorer", "live_run")


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """AppTest runs app.py in this process, and app.py sets torch to one thread: restore it for other tests."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return runs_root(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def root_with_real_run(tmp_path_factory) -> Path:
    """The synthetic runs plus one real MoE training of a few steps, with its final/ checkpoint."""
    from lab.train import train

    root = runs_root(tmp_path_factory.mktemp("real_runs"))
    recipe = tiny_recipe(run="real-moe", model={"n_experts": 4, "top_k": 2},
                         train={"max_steps": 4, "eval_every": 2, "save_every": 4})
    train(recipe, root / "real" / "moe", progress=False)
    return root


def app(runs_dir: Path | str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state[sources.RUNS_DIR_KEY] = str(runs_dir)
    return at.run()


def visit(at: AppTest, page: str) -> AppTest:
    return at.switch_page(f"lab/dashboard/{page}.py").run()


def assert_clean(at: AppTest, where: str) -> None:
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def metric(at: AppTest, label: str, index: int = 0) -> str:
    return [m.value for m in at.metric if m.label == label][index]


@pytest.mark.slow
def test_every_page_renders_without_exception(root_with_real_run):
    at = app(root_with_real_run)
    assert_clean(at, "first page")
    table = " ".join(str(d.value) for d in at.dataframe)
    assert "efficientscale-tiny" in table and "real/moe" in table
    for page in PAGES:
        assert_clean(visit(at, page), page)
        assert at.title and at.title[0].value, page
    # Growth explorer: by default the shipped pretrained source, grown as the experiments grow it (AKI-Pro,
    # twice the width, half again the depth): a real change of function on a model that has learned something.
    visit(at, "growth_explorer")
    assert at.radio(key="src_kind").value == "source-deep"
    assert float(metric(at, "loss: source")) < 4.5 and float(metric(at, "max |logit gap|")) > 1e-3
    # FPI with as many layers as the source keeps the function, and the page says the depth rule did nothing.
    at.selectbox(key="method_source-deep").select("fpi").run()
    at.number_input(key="tgt_layers_source-deep").set_value(8).run()
    assert_clean(at, "FPI width-only on the shipped source")
    assert float(metric(at, "max |logit gap|")) < 1e-4
    assert metric(at, "loss: source") == metric(at, "loss at init: grown")
    assert any("changes nothing" in note.value for note in at.info)
    # Expert load of the real run: its final/ checkpoint is measured on every validation domain.
    visit(at, "expert_load")
    at.selectbox(key="experts_a").select("real/moe").run()
    assert_clean(at, "expert load of a real run")
    assert not [c for c in at.caption if "no final/ checkpoint" in c.value]


def test_the_shipped_reference_runs_render():
    """`make lab`'s first view: the default runs directory (data/runs), every page."""
    assert find_runs(sources.DEFAULT_RUNS_DIR), f"no reference runs in {sources.DEFAULT_RUNS_DIR}: they are shipped"
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert_clean(at, "first page")
    assert at.dataframe, "no runs table on the overview"
    for page in PAGES:
        assert_clean(visit(at, page), page)


def test_empty_or_missing_runs_dir_is_a_message(tmp_path):
    at = app(tmp_path / "missing")
    for page in ("overview", "loss_curves", "expert_load", "compute_savings"):
        visit(at, page)
        assert_clean(at, page)
    visit(at, "loss_curves")
    assert any("No runs" in i.value for i in at.info)


def test_savings_page_shows_the_paper_factors_and_follows_edits(root):
    at = visit(app(root), "compute_savings")
    assert_clean(at, "savings")
    time_factor, compute_factor = savings(TABLE6, TABLE6_SCRATCH)
    assert metric(at, "time savings") == f"{time_factor:.2f}×" == "4.12×"
    assert metric(at, "compute savings") == f"{compute_factor:.2f}×" == "3.35×"
    # Double the from-scratch token budget (row 3) through the editor's state, as a user's edit does.
    at.session_state["table6-0"] = {"edited_rows": {3: {"tokens (B)": 2 * TABLE6_SCRATCH.tokens_b}},
                                    "added_rows": [], "deleted_rows": []}
    at.run()
    assert_clean(at, "savings after edit")
    expected = savings(TABLE6, replace(TABLE6_SCRATCH, tokens_b=2 * TABLE6_SCRATCH.tokens_b))
    assert metric(at, "time savings") == f"{expected[0]:.2f}×" != "4.12×"
    assert metric(at, "compute savings") == f"{expected[1]:.2f}×" != "3.35×"
    # The reset brings the paper's figures back, and the edit does not return on the next run.
    next(b for b in at.button if "reset" in b.label).click().run()
    assert metric(at, "time savings") == "4.12×" and metric(at, "compute savings") == "3.35×"
    at.run()
    assert metric(at, "time savings") == "4.12×" and metric(at, "compute savings") == "3.35×"


def test_savings_edits_survive_a_page_switch_and_travel_in_the_url(root):
    """Before: an edit of Table 6 was lost on leaving the page, and no link could carry it."""
    at = visit(app(root), "compute_savings")
    at.session_state["table6-0"] = {"edited_rows": {3: {"tokens (B)": 2 * TABLE6_SCRATCH.tokens_b}},
                                    "added_rows": [], "deleted_rows": []}
    at.run()
    edited = metric(at, "compute savings")
    assert edited != "3.35×"
    url = at.query_params["table6_edits"]
    url = url[0] if isinstance(url, list) else url
    assert json.loads(url) == {TABLE6_SCRATCH.name: {"tokens (B)": 2 * TABLE6_SCRATCH.tokens_b}}
    at = visit(visit(at, "overview"), "compute_savings")
    assert_clean(at, "savings again")
    assert metric(at, "compute savings") == edited
    # A shared link draws the same table; a hand-edited one (a cell out of range) is ignored.
    for value, expected in ((url, edited), (json.dumps({TABLE6_SCRATCH.name: {"devices": 0}}), "3.35×")):
        shared = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
        shared.session_state[sources.RUNS_DIR_KEY] = str(root)
        shared.run().switch_page("lab/dashboard/compute_savings.py")
        shared.query_params["table6_edits"] = value
        shared.run()
        assert_clean(shared, "savings from a link")
        assert metric(shared, "compute savings") == expected
    next(b for b in at.button if "reset" in b.label).click().run()
    assert metric(at, "compute savings") == "3.35×"
    after = at.query_params["table6_edits"]
    assert json.loads(after[0] if isinstance(after, list) else after) == {}
    at = visit(visit(at, "overview"), "compute_savings")
    assert metric(at, "compute savings") == "3.35×"


def test_savings_page_refuses_an_out_of_range_cell(root):
    at = visit(app(root), "compute_savings")
    at.session_state["table6-0"] = {"edited_rows": {0: {"devices": 0}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception
    assert any("devices" in e.value for e in at.error)


def test_upload_with_malformed_lines_is_reported_and_skipped(tmp_path):
    records = pipeline_records("uploaded", stages=("scale-out",), steps=8)
    lines = [json.dumps(r) for r in records]
    lines.insert(3, "{not json")
    lines.insert(5, "[1, 2, 3]")
    data = ("\n".join(lines)).encode()  # no final newline: an uploaded file is complete
    at = app(tmp_path / "none")
    at.sidebar.get("file_uploader")[0].set_value(("metrics.jsonl", data, "application/json"))
    at.run()
    visit(at, "loss_curves")
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "line 4: not valid JSON" in warnings and "line 6: not a JSON object" in warnings
    assert at.multiselect(key="loss_runs").value == ["upload: metrics.jsonl"]
    assert len(at.session_state["uploaded_runs"]["upload: metrics.jsonl"].metrics.records) == len(records)


def test_upload_over_the_limit_is_refused_before_parsing(tmp_path):
    at = app(tmp_path / "none")
    big = b"{}\n" * (sources.MAX_UPLOAD_BYTES // 3 + 1)
    at.sidebar.get("file_uploader")[0].set_value(("big.jsonl", big, "application/json"))
    at.run()
    assert not at.exception
    assert any("over the upload limit" in e.value for e in at.sidebar.get("error"))
    assert not at.session_state["uploaded_runs"]


def test_a_growing_run_is_re_read_and_a_partial_last_line_waited_for(tmp_path):
    records = pipeline_records("live", stages=("pretrain",), steps=6)
    run_dir = write_run(tmp_path / "live", records[:4], tail='{"run": "live", "event": "tra')
    first = sources.read_run(run_dir)
    assert len(first.metrics.records) == 4 and not first.metrics.problems
    assert sources.read_run(run_dir) is not None
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:  # the writer finishes its line, adds more
        f.write('in", "step": 99}\n' + "".join(json.dumps(r) + "\n" for r in records[4:]))
    again = sources.read_run(run_dir)
    assert len(again.metrics.records) == 1 + len(records)


def test_runs_dir_argument():
    assert sources.runs_dir_argument(["--runs", "a/b"]) == "a/b"
    assert sources.runs_dir_argument(["--runs=c"]) == "c"
    assert sources.runs_dir_argument([]) is None


def test_loss_curves_show_a_group_of_runs(root):
    at = visit(app(root), "loss_curves")
    assert at.multiselect(key="loss_runs").value == ["efficientscale-tiny", "efficientscale-tiny-baseline"]
    at.selectbox(key="loss_group").select("routing").run()
    assert_clean(at, "routing group")
    assert at.multiselect(key="loss_runs").value == ["routing/softmax-topk", "routing/topk-softmax"]
    at.radio[0].set_value("flops").run()
    assert_clean(at, "loss by FLOPs")
    assert at.multiselect(key="loss_runs").value == ["routing/softmax-topk", "routing/topk-softmax"]


def test_savings_from_a_pipeline_run_against_its_baseline(root):
    from lab.dashboard import measured

    at = visit(app(root), "compute_savings")
    assert at.selectbox(key="savings_run").value == "efficientscale-tiny"
    assert at.selectbox(key="savings_baseline").value == "efficientscale-tiny-baseline"
    phases = measured.phases_from_run(sources.read_run(root / "efficientscale-tiny"))
    baseline = measured.scratch_from_run(sources.read_run(root / "efficientscale-tiny-baseline"))
    expected = savings(phases, replace(baseline, tokens_b=sum(p.tokens_b for p in phases)))
    assert metric(at, "time savings", 1) == f"{expected[0]:.2f}×"
    assert metric(at, "compute savings", 1) == f"{expected[1]:.2f}×"


class FakeTraining:
    """Stands in for `subprocess.Popen` of `python -m lab train`: writes a finished MoE run at once."""

    commands: list[list[str]] = []

    def __init__(self, cmd, **kwargs):
        FakeTraining.commands.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        write_run(out, pipeline_records(out.name, stages=("scale-out",), steps=8))
        self.returncode = 0

    def poll(self):
        return self.returncode


def test_live_run_starts_one_bounded_training_and_shows_its_metrics(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setattr(subprocess, "Popen", FakeTraining)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    at = visit(app(tmp_path / "none"), "live_run")
    at.selectbox(key="live_recipe").select("tiny-moe (8 experts, top-2)")
    at.number_input(key="live_steps").set_value(20)
    at.button(key="live_start").click().run()
    assert_clean(at, "live run")
    cmd = FakeTraining.commands[-1]
    assert cmd[1:4] == ["-m", "lab", "train"]
    recipe = yaml.safe_load(Path(cmd[cmd.index("--recipe") + 1]).read_text())
    assert recipe["train"]["max_steps"] == 20 and recipe["train"]["log_every"] == 1  # a loss at every step
    assert Path(cmd[cmd.index("--out") + 1]).is_relative_to(tmp_path)  # never into the runs directory
    assert any("finished: 8 steps" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 3  # loss, validation loss per domain, expert load
    # The job has ended: start is enabled again and stop is not (before: both kept the running state).
    assert not at.button(key="live_start").disabled and at.button(key="live_stop").disabled


class StoppedTraining(FakeTraining):
    """A training stopped by the page's stop button: exit 130 after its progress bars."""

    def __init__(self, cmd, stdout=None, **kwargs):
        super().__init__(cmd, **kwargs)
        self.returncode = None
        stdout.write(b"live:  40%|####      | 8/20 [00:01<00:02, 5.1it/s]\r" * 50)

    def poll(self):
        return self.returncode

    def terminate(self):
        self.returncode = 130


def test_a_stop_reads_as_a_stop_and_the_run_can_be_saved_beside_the_reference_runs(tmp_path, monkeypatch):
    import subprocess

    root = runs_root(tmp_path / "runs")
    monkeypatch.setattr(subprocess, "Popen", StoppedTraining)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    at = visit(app(root), "live_run")
    at.number_input(key="live_steps").set_value(20)
    at.button(key="live_start").click().run()
    assert at.button(key="live_stop").click().run()
    assert_clean(at, "stopped")
    assert any("stopped at step 8, as asked" in c.value for c in at.caption)
    assert not at.code and not any("exit code" in c.value for c in at.caption)  # no log dump, no "crash"
    at.button(key="live_save").click().run()
    saved = list((root / "live").rglob("metrics.jsonl"))
    assert len(saved) == 1 and not list((root / "live").rglob("*.safetensors"))
    at = visit(at, "loss_curves")
    assert any(label.startswith("live/") for label in at.multiselect(key="loss_runs").options)


def test_a_failed_run_shows_the_end_of_its_log_without_progress_bars(tmp_path, monkeypatch):
    import subprocess

    class Failing(StoppedTraining):
        def __init__(self, cmd, stdout=None, **kwargs):
            super().__init__(cmd, stdout=stdout, **kwargs)
            stdout.write(b"\nerror: the loss is nan at step 8 (try a lower optim.lr)\n")
            self.returncode = 2

    monkeypatch.setattr(subprocess, "Popen", Failing)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    at = visit(app(tmp_path / "none"), "live_run")
    at.button(key="live_start").click().run()
    assert any("failed (exit code 2)" in c.value for c in at.caption)
    assert at.code[0].value.strip() == "error: the loss is nan at step 8 (try a lower optim.lr)"


def test_runs_beyond_the_memory_budget_are_listed_unread(root, monkeypatch):
    first = (root / "efficientscale-tiny" / "metrics.jsonl").stat().st_size
    monkeypatch.setattr(sources, "MAX_SHOWN_BYTES", first + 1)
    at = app(root)
    assert_clean(at, "overview over budget")
    unread = [w.value for w in at.warning if "not read" in w.value]
    assert len(unread) == 3 and not any(w.startswith("efficientscale-tiny:") for w in unread)


def test_a_page_keeps_its_view_across_page_switches_and_in_the_url(root):
    """Before: every control went back to its default when its page was left. Now each page's controls come
    back, and the URL holds them, so a view can be shared (issue: remembered state)."""
    at = visit(app(root), "loss_curves")
    at.selectbox(key="loss_group").select("routing").run()
    at.radio(key="loss_x").set_value("tokens").run()
    at.slider(key="loss_smoothing").set_value(0.5).run()
    assert at.query_params["loss_x"] == ['"tokens"'] or at.query_params["loss_x"] == '"tokens"'
    at = visit(at, "overview")
    assert_clean(at, "overview")
    at = visit(at, "loss_curves")
    assert_clean(at, "loss curves again")
    assert at.radio(key="loss_x").value == "tokens" and at.slider(key="loss_smoothing").value == 0.5
    assert at.multiselect(key="loss_runs").value == ["routing/softmax-topk", "routing/topk-softmax"]
    # A shared link: a new session opened on the URL's parameters draws the same view.
    shared = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    shared.session_state[sources.RUNS_DIR_KEY] = str(root)
    shared.run().switch_page("lab/dashboard/loss_curves.py")  # the link's path: /loss
    for key in ("loss_group", "loss_group_shown", "loss_runs", "loss_x", "loss_smoothing"):
        value = at.query_params[key]
        shared.query_params[key] = value[0] if isinstance(value, list) else value
    shared.run()
    assert shared.radio(key="loss_x").value == "tokens" and shared.slider(key="loss_smoothing").value == 0.5
    assert shared.multiselect(key="loss_runs").value == ["routing/softmax-topk", "routing/topk-softmax"]


def test_a_hand_edited_url_never_reaches_a_widget(root):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state[sources.RUNS_DIR_KEY] = str(root)
    at.run().switch_page("lab/dashboard/loss_curves.py")
    at.query_params.update({"loss_x": '"sideways"', "loss_smoothing": "7", "loss_runs": '["gone"]', "loss_mark": "{"})
    at.run()
    assert_clean(at, "bad URL")
    assert at.radio(key="loss_x").value in ("step", "flops") and at.slider(key="loss_smoothing").value == 0.0


@pytest.mark.parametrize("page, notebook", [("loss_curves", "02_depth_growth"), ("expert_load", "04_upcycling"),
                                            ("compute_savings", "05_compute_savings"),
                                            ("growth_explorer", "01_fpi_symmetry")])
def test_each_analysis_page_opens_with_what_it_shows_its_metrics_and_its_notebook(root, page, notebook):
    at = visit(app(root), page)
    text = " ".join(m.value for m in at.markdown)
    assert f"notebooks/{notebook}" in text and "make notebooks" in text
    assert [e.label for e in at.expander][:1] == ["What the numbers mean"]


def test_the_overview_names_every_page_and_keeps_whole_descriptions(root):
    at = app(root)
    text = " ".join(m.value for m in at.markdown)
    for page in ("Loss curves", "Expert load", "Compute savings", "Growth explorer", "Live run"):
        assert f"**{page}**" in text


def test_run_details_show_samples_transitions_and_configuration():
    """The samples training records at each evaluation and a pipeline's transitions, never shown before."""
    from lab.dashboard.run_details import samples_at, sample_steps, transitions
    from lab.runs import load_run

    run = load_run(REPO / "data" / "runs" / "efficientscale-tiny")
    rows = transitions(run)
    assert [r["kind"] for r in rows] == ["grow", "upcycle"]
    grow, upcycle = rows
    assert grow["parameters after"] > grow["parameters before"] and grow["loss right after"] > grow["loss just before"]
    # 8 experts, top-2: more weights than a token uses, and a token uses more than the dense model had.
    assert upcycle["parameters after"] > upcycle["active after"] > upcycle["parameters before"]
    assert abs(upcycle["loss right after"] - upcycle["loss just before"]) < 1e-5  # upcycling keeps the function
    prompts, samples = samples_at(run, sample_steps(run)[-1])
    assert set(prompts) == set(samples) == {"english", "chinese", "code", "arithmetic"}

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at = at.switch_page("lab/dashboard/run_details.py").run()
    at.selectbox(key="details_a").select("efficientscale-tiny").run()
    assert_clean(at, "run details")
    assert any("66 * 84 =" in c.value for c in at.code)  # the arithmetic prompt and its continuation
    assert len(at.dataframe) == 1 and len(at.json) == 1


def test_the_overview_filters_its_runs_table_by_group_stage_and_kind():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()  # the shipped reference runs
    everything = at.dataframe[0].value
    at.radio(key="overview_kind").set_value("MoE only").run()
    assert_clean(at, "MoE only")
    moe = at.dataframe[0].value
    assert 0 < len(moe) < len(everything) and moe["MoE"].all()
    at.radio(key="overview_kind").set_value("dense only").run()
    assert not at.dataframe[0].value["MoE"].any()
    at.radio(key="overview_kind").set_value("every run").run()
    at.multiselect(key="overview_groups").set_value(["growth"]).run()
    growth = at.dataframe[0].value
    assert len(growth) > 0 and all(run.startswith("growth/") for run in growth["run"])
    at.multiselect(key="overview_groups").set_value([]).run()
    at.multiselect(key="overview_stages").set_value(["scale-out"]).run()
    assert all("scale-out" in stages for stages in at.dataframe[0].value["stages"])


def test_a_run_keeps_its_colour_whatever_else_is_selected(root):
    at = visit(app(root), "loss_curves")
    at.multiselect(key="loss_runs").set_value(["efficientscale-tiny-baseline", "routing/topk-softmax"]).run()
    first = {t["name"]: (t["line"]["color"], t["line"]["dash"]) for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]}
    at.multiselect(key="loss_runs").set_value(["routing/topk-softmax"]).run()
    alone = {t["name"]: (t["line"]["color"], t["line"]["dash"]) for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]}
    assert alone["routing/topk-softmax"] == first["routing/topk-softmax"]
    assert first["routing/topk-softmax"] != first["efficientscale-tiny-baseline"]


def test_expert_load_demo_trains_under_the_chosen_balance(tmp_path):
    """With no MoE run to measure, the page's demo MoE trains a few steps under the balance the control chooses:
    aux-loss-free routing biases move and even out the load; with zero steps the choice can change nothing, and
    the page says so. The choice comes back after a page switch."""
    at = visit(app(tmp_path / "missing"), "expert_load")
    assert_clean(at, "demo, aux_loss")
    assert at.selectbox(key="demo_balance").value == "aux_loss"
    assert metric(at, "largest |expert bias|") == "—"  # the load-balancing loss keeps no bias
    cv_with_loss = float(metric(at, "load CV, last quarter of the steps"))
    at.selectbox(key="demo_balance").select("aux_free").run()
    assert_clean(at, "demo, aux_free")
    assert float(metric(at, "largest |expert bias|")) > 0
    assert float(metric(at, "load CV, last quarter of the steps")) < cv_with_loss
    assert "aux_free" in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
    at.selectbox(key="demo_balance").select("none").run()
    assert_clean(at, "demo, none")
    assert metric(at, "largest |expert bias|") == "—"
    at.number_input(key="demo_steps").set_value(0).run()
    assert_clean(at, "demo, no step")
    assert not at.metric and any("before any step" in c.value for c in at.caption)
    at = visit(visit(at, "overview"), "expert_load")
    assert at.selectbox(key="demo_balance").value == "none" and at.number_input(key="demo_steps").value == 0


def test_growth_explorer_grows_by_msg_and_sets_its_mask_by_hand(tmp_path):
    """MSG among the explorer's methods: exact at mask 0 on the pretrained source, and the page says it does not
    train (the ramp happens in training); the mask slider switches the untrained new units on, which costs loss."""
    at = visit(app(tmp_path / "missing"), "growth_explorer")
    at.selectbox(key="method_source-deep").select("msg").run()
    assert_clean(at, "MSG at mask 0")
    assert float(metric(at, "max |logit gap|")) < 1e-4
    assert metric(at, "loss: source") == metric(at, "loss at init: grown")
    assert any("does not train" in note.value and "100 steps" in note.value for note in at.info)
    at.slider(key="msg_mask_source-deep").set_value(1.0).run()
    assert_clean(at, "MSG at mask 1")
    assert float(metric(at, "max |logit gap|")) > 1e-2
    assert float(metric(at, "loss at init: grown")) > float(metric(at, "loss: source"))
    assert any("c = 1, set by hand" in note.value for note in at.info)
    at.slider(key="noise_source-deep").set_value(0.05).run()  # msg copies nothing: noise is refused in one line
    assert any("no symmetry to break" in e.value for e in at.error)
