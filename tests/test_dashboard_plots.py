"""The dashboard's builders and live computations, without Streamlit: plot builders (`lab.plots`), the
savings of a run's measured figures, the growth explorer's bounds, per-domain expert load, the command."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from dashboard_fixtures import pipeline_records
from lab.dashboard import explorer, measured
from lab.errors import LabError
from lab.flops import SECONDS_PER_DAY, savings, scratch_phase
from lab.paper import TABLE6, TABLE6_SCRATCH
from lab.plots.curves import loss_figure, series, stage_boundaries, val_domains
from lab.plots.experts import (domain_load_from_run, domain_load_steps, expert_load, expert_load_heatmap,
                               router_metrics_figure)
from lab.plots.savings import savings_figure
from lab.plots.style import smooth
from lab.runs import MetricsLog, Run

STAGES = ("preparation", "scale-up", "scale-out")


def make_run(name="pipe", **kw) -> Run:
    return Run(name, f"/nowhere/{name}", {}, MetricsLog(records=pipeline_records(name, **kw)))


def test_smooth_keeps_constants_and_gaps():
    assert smooth([1.0, 2.0], 0.0) == [1.0, 2.0]
    assert smooth([3.0] * 5, 0.9) == pytest.approx([3.0] * 5)  # debiased: no pull towards zero
    out = smooth([1.0, float("nan"), 1.0], 0.5)
    assert math.isnan(out[1]) and out[2] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        smooth([1.0], 1.0)


def test_stage_boundaries_from_transition_records_or_stage_labels():
    run = make_run(stages=STAGES, steps=5)
    transitions = [(float(r["step"]), r["to"]) for r in run.events("transition")]
    assert stage_boundaries(run) == transitions == [(5.0, "scale-up"), (10.0, "scale-out")]
    without = Run("p", "/p", {}, MetricsLog(records=[r for r in run.metrics.records if r["event"] != "transition"]))
    assert stage_boundaries(without, "tokens") == [(6 * 2048.0, "scale-up"), (11 * 2048.0, "scale-out")]


def test_loss_figure_draws_one_line_per_run_or_per_run_and_domain():
    runs = [make_run("a"), make_run("b", seed=1)]
    fig = loss_figure(runs, x="flops")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert fig.layout.xaxis.type == "log"
    assert list(fig.data[0].y) == series(runs[0], "loss", x="flops")[1]
    assert len(fig.layout.shapes) == 2  # the two stage boundaries (shared by both runs)
    domains = val_domains(runs)
    assert domains == ["english", "chinese", "code", "arithmetic"]
    assert len(loss_figure(runs, metric="val_loss", domains=domains[:3]).data) == 2 * 3
    smoothed = loss_figure(runs[:1], smoothing=0.5)
    assert len(smoothed.data) == 2 and smoothed.data[0].opacity < 1  # raw values stay, faint


def test_expert_load_shares_sum_to_one_and_follow_the_counts():
    run = make_run(stages=("scale-out",), steps=6, n_experts=4)
    xs, shares = expert_load(run, 1)
    _, counts = expert_load(run, 1, normalize=False)
    trains = run.events("train")
    assert xs == [float(r["step"]) for r in trains]
    for i, record in enumerate(trains):
        assert [counts[e][i] for e in range(4)] == record["tokens_per_expert"][1]
        assert sum(shares[e][i] for e in range(4)) == pytest.approx(1.0)
    assert len(expert_load_heatmap(run).data) == 2  # one heatmap per MoE layer
    assert len(router_metrics_figure([run, make_run("b", stages=("scale-out",))]).data) == 3 * 2


def test_domain_load_is_read_from_the_latest_eval_record():
    run = make_run(stages=("scale-out",), steps=8, domain_load=True)
    step, loads = domain_load_from_run(run)
    last = [r for r in run.events("eval") if "tokens_per_expert_by_domain" in r][-1]
    assert step == last["step"] and loads == last["tokens_per_expert_by_domain"]
    steps = domain_load_steps(run)
    assert steps == [r["step"] for r in run.events("eval")] and len(steps) == 2
    first = [r for r in run.events("eval")][0]
    assert domain_load_from_run(run, steps[1] - 1) == (steps[0], first["tokens_per_expert_by_domain"])
    assert domain_load_from_run(make_run(stages=("scale-out",))) is None


def test_savings_figure_shows_the_factors_of_lab_flops():
    fig = savings_figure(TABLE6, TABLE6_SCRATCH)
    time_factor, compute_factor = savings(TABLE6, TABLE6_SCRATCH)
    assert f"×{time_factor:.2f}" in fig.layout.title.text and f"×{compute_factor:.2f}" in fig.layout.title.text
    ratios = [a.text for a in fig.layout.annotations if a.text.startswith("×")]
    assert ratios[0] == f"×{time_factor:.2f}" and ratios[-1] == f"×{compute_factor:.2f}"


def test_measured_phases_account_for_every_token_and_flop():
    run = make_run(stages=STAGES, steps=6)
    phases = measured.phases_from_run(run)
    assert [p.name for p in phases] == list(STAGES)
    trains = run.events("train")
    assert sum(p.tokens_b for p in phases) * 1e9 == pytest.approx(trains[-1]["tokens"])
    # days x devices x TFLOP/s per device is the FLOPs the run recorded (the Phase fields were measured, not assumed).
    flops = sum(p.days * SECONDS_PER_DAY * p.tflops * 1e12 for p in phases)
    assert flops == pytest.approx(trains[-1]["flops"])
    scratch = scratch_phase(phases)
    assert scratch.tokens_b == pytest.approx(sum(p.tokens_b for p in phases))
    time_factor, _ = savings(phases, scratch)
    assert time_factor > 0


def test_explorer_refuses_sizes_beyond_its_limits():
    with pytest.raises(LabError, match="dim"):
        explorer.source_config(dim=4096, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=64)
    cfg = explorer.source_config(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    with pytest.raises(LabError, match="n_layers"):
        explorer.plan_for(cfg, method="fpi", depth="stack", dim=64, n_layers=1000, n_heads=8, ffn_dim=128)
    with pytest.raises(LabError, match="train_steps"):
        explorer.build_source(cfg, train_steps=10**6)


def test_fpi_width_growth_preserves_the_function_and_aki_does_not():
    cfg = explorer.source_config(dim=32, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=64, vocab_size=256)
    source = explorer.build_source(cfg, seed=0)
    tokens = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    target = dict(dim=64, n_layers=2, n_heads=8, ffn_dim=128)
    results = explorer.compare_methods(source, tokens, **target)
    fpi, aki = results["FPI + stacking"], results["AKI + stacking"]
    assert fpi.plan.is_exact and fpi.max_logit_gap < 1e-4
    torch.testing.assert_close(fpi.grown_loss, fpi.source_loss, rtol=1e-5, atol=1e-5)
    assert not aki.plan.is_exact and aki.max_logit_gap > 1e-3
    assert fpi.grown_params > fpi.source_params


def test_domain_expert_load_counts_top_k_assignments_per_token():
    cfg = explorer.source_config(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, vocab_size=256)
    moe = explorer.upcycled_demo_model(explorer.build_source(cfg), n_experts=4, top_k=2)
    windows = {d: torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(i))
               for i, d in enumerate(("english", "code"))}
    loads = explorer.domain_expert_load(moe, windows)
    assert list(loads) == ["english", "code"]
    for counts in loads.values():
        assert len(counts) == 2 and all(len(layer) == 4 for layer in counts)
        assert all(sum(layer) == 2 * 16 * 2 for layer in counts)  # every token goes to top_k experts
    with pytest.raises(LabError, match="dense"):
        explorer.domain_expert_load(explorer.build_source(cfg), windows)


def test_dashboard_command_checks_its_arguments(tmp_path):
    from lab.commands.dashboard import command, port_number

    args = argparse.Namespace(runs=str(tmp_path), port=8600, host="127.0.0.1")
    cmd = command(args)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[-2:] == ["--runs", str(tmp_path.resolve())]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    with pytest.raises(LabError, match="no such directory"):
        command(argparse.Namespace(runs=str(tmp_path / "missing"), port=8600, host="127.0.0.1"))
    with pytest.raises(argparse.ArgumentTypeError):
        port_number("70000")


def test_the_explorer_defaults_to_a_shipped_source_grown_deeper():
    from lab.sources import SOURCES_DIR

    source = explorer.shipped_source("source-deep")  # committed with the project: a missing file fails
    assert (SOURCES_DIR / "source-deep" / "config.json").is_file() and not source.training
    target = explorer.default_target(source.config)
    assert target == {"dim": 256, "n_heads": 8, "ffn_dim": 704, "n_layers": 12}
    plan = explorer.plan_for(source.config, method="aki-pro", depth="interpolate", **target)
    assert plan.target.n_layers > plan.source.n_layers and explorer.choice_notes(plan) == []
    with pytest.raises(LabError, match="the shipped ones are"):
        explorer.shipped_source("no-such-source")


def test_the_explorer_says_which_choices_coincide():
    mha = explorer.source_config(dim=32, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=64)
    same_depth = explorer.plan_for(mha, method="aki-pro", depth="identity", dim=64, n_layers=2, n_heads=8, ffn_dim=128)
    notes = " ".join(explorer.choice_notes(same_depth))
    assert "changes nothing" in notes and "AKI-Pro equals AKI" in notes and "with identity depth" in notes
    # What the note says holds: on a source without key-value groups AKI-Pro grows exactly AKI's model.
    from lab.derive import grow_model

    source = explorer.build_source(mha, seed=0)
    grown = [grow_model(source, explorer.plan_for(mha, method=m, depth="stack", dim=64, n_layers=3, n_heads=8,
                                                  ffn_dim=128)).state_dict() for m in ("aki", "aki-pro")]
    assert grown[0].keys() == grown[1].keys() and all(torch.equal(grown[0][k], grown[1][k]) for k in grown[0])
    no_new_units = explorer.plan_for(mha, method="aki", depth="stack", dim=32, n_layers=3, n_heads=4, ffn_dim=64)
    assert explorer.choice_notes(no_new_units) == [
        "No new units: AKI only changes how new units are filled, so here it gives FPI's model."]


def test_relative_init_loss_bars_start_at_the_source():
    from lab.plots.growth import init_loss_figure

    fig = init_loss_figure({"a": 3.70, "b": 3.62}, source_loss=3.60, relative=True)
    assert list(fig.data[0].y) == pytest.approx([0.10, 0.02])
    assert "3.700 (+0.100)" in fig.data[0].text[0]
    with pytest.raises(ValueError):
        init_loss_figure({"a": 1.0}, relative=True)


def test_load_colour_scales_cover_the_data_and_panels_share_one():
    from lab.plots.experts import domain_load_figure

    collapsed = [[50, 40, 2, 2, 2, 2, 1, 1]]  # half the tokens on one expert: share 0.50, past 2/E = 0.25
    even = [[10] * 8]
    fig = domain_load_figure({"code": collapsed, "english": even})
    assert {trace.zmax for trace in fig.data} == {0.5}  # one scale for both panels, reaching the data's top
    assert all(trace.zmid == 1 / 8 for trace in fig.data)
    assert domain_load_figure({"english": even}).data[0].zmax == 0.25  # at least 2/E, white stays at 1/E


def test_no_two_lines_of_a_loss_figure_look_alike():
    from lab.plots.curves import loss_figure
    from lab.teach.loop import as_run

    def run(name):
        return as_run(name, [{"event": "eval", "step": s, "val_loss": {"english": 4.0 - s, "code": 3.0 - s},
                              "val_loss_mean": 3.5 - s} for s in (0, 1)])

    runs = [run(f"growth/{i}") for i in range(8)]  # the eight growth reference runs
    for metric in ("val_loss", "val_loss_mean"):
        looks = [(t.line.color, t.line.dash, t.marker.symbol) for t in loss_figure(runs, metric=metric).data]
        assert len(looks) == len(set(looks)) == (16 if metric == "val_loss" else 8)
    many = [run(f"r{i}") for i in range(20)]
    looks = [(t.line.color, t.line.dash) for t in loss_figure(many, metric="val_loss_mean").data]
    assert len(set(looks)) == 20


def test_bookkeeping_fields_are_not_offered_as_metrics():
    from lab.plots.curves import available_metrics
    from lab.teach.loop import as_run

    run = as_run("p", [{"event": "train", "step": 1, "stage_step": 1, "tokens": 8, "flops": 1.0, "loss": 3.0,
                        "lr": 1e-3}])
    offered = available_metrics([run])
    assert "stage_step" not in offered and {"loss", "lr"} <= set(offered)


def test_loss_figure_by_wall_clock_with_one_hover_for_every_line():
    runs = [make_run("a"), make_run("b", seed=1)]
    fig = loss_figure(runs, x="time")
    assert fig.layout.xaxis.title.text == "wall-clock time (s)"
    assert list(fig.data[0].x) == series(runs[0], "loss", x="time")[0] and len(fig.data[0].x) > 0
    assert fig.layout.hovermode == "x unified"  # every visible run's value at the pointer's step
