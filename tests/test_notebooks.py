"""The notebooks and the helpers they call (`lab.teach`, `lab.notebooks`).

The helpers' invariants are checked on tiny models in a second or so; every notebook is executed top to
bottom with LAB_FAST=1 in a fresh kernel (slow: about a minute each on 2 cores), and its time printed
and recorded as a test property (`pytest -s` or the junit report shows it).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import lab
from lab.errors import LabError
from lab.flops import savings
from lab.paper import TABLE6, TABLE6_SCRATCH
from lab.growth import growth_maps, plan_growth
from lab.derive import grow_model
from lab.notebooks import build, execute, notebook_sources, read_notebook
from lab.teach.fast import fast_mode, pick, progress_enabled
from lab.teach.heads import global_head_map, groups_after_growth, permute_q_heads
from lab.teach.layers import substitution_losses, weight_similarity
from lab.teach.reference import reference_group, reference_run
from lab.teach.similarity import copy_similarity, distinct_units, effective_rank, mlp_units

EXPECTED = ["01_fpi_symmetry", "02_depth_growth", "03_gqa_aki_pro", "04_upcycling_and_routers",
            "05_compute_savings", "06_efficientscale_end_to_end"]


def tiny(**kw) -> lab.ModelConfig:
    base = dict(dim=32, n_layers=2, n_heads=4, ffn_dim=64, vocab_size=97, max_seq_len=64)
    return lab.ModelConfig(**{**base, **kw})


def tokens(cfg, n=2, T=16, seed=0):
    return torch.randint(0, cfg.vocab_size, (n, T), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ switches
@pytest.mark.parametrize("value,expected", [(None, False), ("", False), ("0", False), ("false", False),
                                            ("1", True), ("yes", True)])
def test_fast_mode_reads_lab_fast(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("LAB_FAST", raising=False)
    else:
        monkeypatch.setenv("LAB_FAST", value)
    assert fast_mode() is expected
    assert pick("full", "fast") == ("fast" if expected else "full")


def test_progress_is_off_in_ci(monkeypatch):
    monkeypatch.delenv("LAB_PROGRESS", raising=False)
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled()
    monkeypatch.delenv("CI")
    assert progress_enabled()
    monkeypatch.setenv("LAB_PROGRESS", "0")
    assert not progress_enabled()


# ------------------------------------------------------------------ symmetry (notebook 01)
def _adam_steps(model, ids, steps=3):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("method,stays_copies", [("fpi", True), ("aki", False)])
def test_fpi_copies_stay_copies_and_aki_breaks_them(method, stays_copies):
    cfg = tiny()
    torch.manual_seed(0)
    source = lab.DecoderLM(cfg)
    plan = plan_growth(cfg, method=method, ffn_dim=128)
    grown = grow_model(source, plan)
    ffn = growth_maps(plan)["ffn"]
    _adam_steps(grown, tokens(cfg))
    sims = copy_similarity(mlp_units(grown, 0), ffn)
    if stays_copies:
        torch.testing.assert_close(sims, torch.ones_like(sims))
        assert distinct_units(mlp_units(grown, 0)) == cfg.ffn_dim
    else:
        assert sims.max() < 0.99
        assert distinct_units(mlp_units(grown, 0)) == 128


# ------------------------------------------------------------------ heads (notebook 03)
def test_effective_rank_ignores_exact_copies_and_counts_near_copies_for_little():
    torch.manual_seed(0)
    units = torch.randn(16, 64)
    alone = effective_rank(units)
    assert effective_rank(torch.cat([units, units])) == pytest.approx(alone, rel=1e-4)  # exact copies add nothing
    near = effective_rank(torch.cat([units, units + 0.01 * torch.randn_like(units)]))
    fresh = effective_rank(torch.cat([units, torch.randn(16, 64)]))
    assert alone < near < fresh and near - alone < 0.1 * (fresh - alone)


def test_q_heads_permuted_inside_groups_keep_the_function_across_groups_do_not():
    cfg = tiny(n_kv_heads=2, head_dim=8)
    torch.manual_seed(0)
    model = lab.DecoderLM(cfg).eval()
    ids = tokens(cfg)
    ref = model(ids).logits
    torch.testing.assert_close(permute_q_heads(model, [1, 0, 3, 2])(ids).logits, ref)
    assert (permute_q_heads(model, [2, 3, 0, 1])(ids).logits - ref).abs().max() > 1e-3


def test_global_head_map_moves_heads_to_other_groups():
    trained, reads = groups_after_growth(global_head_map(32, 40), 32, 8, 40)
    assert (trained != reads).sum() > 0
    grouped = growth_maps(plan_growth(tiny(dim=32, n_heads=4, n_kv_heads=2, head_dim=8), method="aki-pro",
                                      dim=48, n_heads=6))["q"]
    heads = grouped.index[::8] // 8
    trained, reads = groups_after_growth(type(grouped)(heads, grouped.is_new[::8], 4), 4, 2, 6)
    assert torch.equal(trained, reads)


# ------------------------------------------------------------------ layers (notebook 02)
def test_layer_similarity_diagonals():
    cfg = tiny(n_layers=3)
    torch.manual_seed(0)
    model = lab.DecoderLM(cfg).eval()
    ids = tokens(cfg)
    sim = weight_similarity(model)
    torch.testing.assert_close(sim.diag(), torch.ones(3))
    subs = substitution_losses(model, ids)
    own = model(ids, labels=ids).lm_loss
    torch.testing.assert_close(subs.diag(), own.expand(3))
    assert (subs - own).abs().max() > 1e-4  # another layer's weights compute something else


# ------------------------------------------------------------------ savings widget (notebook 05)
def test_savings_explorer_starts_at_the_paper_and_moves_with_a_slider():
    from lab.teach.savings_widget import savings_explorer

    box, state = savings_explorer(TABLE6, TABLE6_SCRATCH)
    text = box.children[1].value
    assert "×4.12" in text and "×3.35" in text
    scale_out_tokens = box.children[0].children[2].children[0]
    scale_out_tokens.value = scale_out_tokens.value * 2
    assert state["phases"][2].tokens_b == pytest.approx(TABLE6[2].tokens_b * 2)
    time_factor, _ = savings(state["phases"], state["scratch"])
    assert time_factor < 4.12
    assert f"×{time_factor:.2f}" in box.children[1].value
    assert f"×{time_factor:.2f}" in box.children[2].layout.title.text
    # Linked figures: the preparation on devices half as fast takes longer and spends the same compute.
    before = savings(state["phases"], state["scratch"])
    prep_rate = box.children[0].children[0].children[2]
    prep_rate.value = prep_rate.value / 2
    after = savings(state["phases"], state["scratch"])
    assert after[0] < before[0] and after[1] == pytest.approx(before[1])
    assert state["phases"][0].tokens_per_day_b == pytest.approx(TABLE6[0].tokens_per_day_b / 2)
    assert f"{state['phases'][0].tokens_per_day_b:,.1f} B" in box.children[0].children[0].children[-1].value


# ------------------------------------------------------------------ reference runs
def test_reference_helpers_tolerate_missing_runs(tmp_path):
    assert reference_run("efficientscale-tiny", root=tmp_path) is None
    assert reference_group("growth", root=tmp_path) == {}
    run = tmp_path / "growth" / "b"
    run.mkdir(parents=True)
    (run / "meta.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"event": "eval", "step": 0, "val_loss_mean": 1.0}\n')
    (tmp_path / "growth" / "a").mkdir()  # no metrics: not a run
    assert list(reference_group("growth", order=("b",), root=tmp_path)) == ["b"]


# ------------------------------------------------------------------ the notebooks
PROBE_CELL = """

# %%
from lab.teach.controls import LIVE, move

for _controls, _state in LIVE:
    _before = _state["figure"].to_json()
    move(next(iter(_controls.values())))
    assert _state["figure"].to_json() != _before, "a control did not change its figure"
print(f"moved {len(LIVE)} live figure(s)")
"""

def test_six_notebooks_each_with_prose_figures_and_exercises(tmp_path):
    sources = notebook_sources()
    assert [s.stem for s in sources] == EXPECTED
    for source in sources:
        nb = read_notebook(source)
        markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "## Exercises" in markdown, source.name
        assert "setup_plotly()" in code and "figure(" in code, source.name
        out = build(source, tmp_path / source.with_suffix(".ipynb").name)
        assert out.is_file() and nb.metadata["kernelspec"]["name"] == "python3"
    assert any("savings_explorer" in s.read_text() for s in sources)  # at least one uses widgets


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_executes_fast(name, record_property, tmp_path):
    source = next(s for s in notebook_sources() if s.stem == name)
    # One more cell at the end moves every live figure's first control and checks the figure changed:
    # each notebook's controls move what they draw (notebook 05's explorer has its own test below).
    probe = tmp_path / source.name
    probe.write_text(source.read_text() + PROBE_CELL)
    done = execute(probe, fast=True, timeout=600)
    record_property("seconds", round(done.seconds, 1))
    print(f"\n{name}: {done.seconds:.1f} s")
    figures = sum("application/vnd.plotly.v1+json" in o.get("data", {})
                  for c in done.notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert figures >= 1, f"{name}: no figure was drawn"
    assert math.isfinite(done.seconds)


# ------------------------------------------------------------------ controls (every notebook has one)
def test_a_live_figure_is_rebuilt_when_a_control_moves():
    import ipywidgets as w
    import plotly.graph_objects as go

    from lab.teach.controls import live_figure

    def bars(height: float, label: str):
        return go.Figure(go.Bar(x=[label], y=[height]), layout=dict(title=f"{label} {height}"))

    box, state = live_figure(bars, {"height": w.FloatSlider(value=1.0), "label": w.Dropdown(options=["a", "b"])})
    figure_widget = box.children[1]
    assert list(figure_widget.data[0].y) == [1.0]
    box.children[0].children[0].value = 3.0
    box.children[0].children[1].value = "b"
    assert list(figure_widget.data[0].y) == [3.0] and list(figure_widget.data[0].x) == ["b"]
    assert figure_widget.layout.title.text == "b 3.0" == state["figure"].layout.title.text


def test_moving_a_control_keeps_it_within_its_range():
    import ipywidgets as w

    from lab.teach.controls import move

    log = w.FloatLogSlider(value=0.02, base=10, min=-3, max=0)
    move(log)
    assert log.value == pytest.approx(1e-3)  # 10 ** min, not the exponent
    ints = w.IntSlider(value=2, min=2, max=8)
    move(ints)
    assert ints.value == 8
    pick_one = w.Dropdown(options=["a", "b"], value="a")
    move(pick_one)
    assert pick_one.value == "b"


@pytest.mark.parametrize("name", EXPECTED)
def test_every_notebook_has_a_control_that_moves_a_figure(name):
    """Each notebook's source builds a live figure or an explorer (lab.teach.controls / savings_widget)."""
    text = next(s for s in notebook_sources() if s.stem == name).read_text()
    assert "live_figure(" in text or "savings_explorer(" in text, f"{name} has no interactive control"


def test_the_notebooks_read_seeded_experiments_and_judged_claims(tmp_path):
    from lab.teach.claims import claims_table, per_seed_table

    for seed, value in ((0, 3.0), (1, 3.2), (2, 3.4)):
        folder = tmp_path / "seed-0" / "upcycle" / f"seed-{seed}"
        folder.mkdir(parents=True)
        (folder / "measurements.json").write_text(json.dumps(
            {"experiment": "upcycle", "seed": seed, "values": {"dense/trained_loss": value}}))
    table = per_seed_table("upcycle", ["dense/trained_loss", "absent"], root=tmp_path)
    assert list(table.index) == ["dense/trained_loss"]
    assert table.loc["dense/trained_loss", "mean"] == pytest.approx(3.2)
    assert table.loc["dense/trained_loss", "stdev"] == pytest.approx(0.2)
    assert per_seed_table("table1", ["x"], root=tmp_path).empty  # not exported yet: empty, no error
    shipped = claims_table(["C7", "C8", "C99"])  # data/claims.json, committed
    assert list(shipped.index) == ["C7", "C8"] and set(shipped["verdict"]) <= {"holds", "inconclusive", "contradicted"}


# ------------------------------------------------------------------ training helpers (notebooks 01, 02, 04)
def test_train_steps_ramps_msg_masks_step_by_step_and_folds_them_at_the_end():
    """As lab.train does: the masks of masked structural growth follow the step, and at the ramp's end they fold
    into the weights, leaving a plain model."""
    from lab.msg_masks import mask_ramp
    from lab.teach.loop import train_steps

    cfg = tiny(vocab_size=4096)
    torch.manual_seed(0)
    grown = grow_model(lab.DecoderLM(cfg), plan_growth(cfg, method="msg", ramp_steps=3, ffn_dim=96))
    seen = []
    train_steps(grown, 4, batch_size=2, seq_len=16, on_step=lambda step, model, record: seen.append(
        None if mask_ramp(model.config) is None else mask_ramp(model.config).value))
    assert seen == [pytest.approx(1 / 3), pytest.approx(2 / 3), None, None]
    assert all(getattr(m, "msg_mask", None) is None for m in grown.modules())


def test_train_steps_on_one_domain_moves_only_what_trains():
    """`domains` restricts the batches to those domains' text; frozen parameters (LLaMA-Pro's new-blocks
    training) get no optimizer state and stay bit-identical."""
    from lab.teach.loop import corpus_tokens, train_batches, train_steps
    from lab.train.trainable import freeze_all_but

    code = train_batches(16, 2, domains=["code"])
    assert torch.equal(code.stream, corpus_tokens("train")["code"].to(torch.int64).reshape(-1))
    with pytest.raises(LabError, match="data.domains: 'klingon' is not a domain"):
        train_batches(16, 2, domains=["klingon"])
    torch.manual_seed(0)
    model = lab.DecoderLM(tiny(vocab_size=4096))
    freeze_all_but(model, (1,))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model, 2, batch_size=2, seq_len=16, domains=["code"])
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == (not name.startswith("layers.1.")), name


def test_load_cv_is_zero_at_balance_and_averages_layers():
    from lab.teach.experts import load_cv, with_load_cv

    assert load_cv([[5, 5, 5, 5]]) == 0.0
    assert load_cv([[0, 10], [5, 5]]) == pytest.approx(0.5)  # layer CVs 1 and 0
    records = with_load_cv([{"event": "train", "tokens_per_expert": [[0, 10]]}, {"event": "eval"}])
    assert records[0]["load_cv"] == pytest.approx(1.0) and "load_cv" not in records[1]
