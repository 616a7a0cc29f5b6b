"""Shared-expert upcycling (`lab.upcycle.shared`): the weights are the stated slices, the gated shared expert is
its dense slices bit for bit, the layer equals the dense MLP with topk_softmax (to float32 rounding: the dense
sum over units becomes two sums added), the CLI writes qwen2_moe that transformers opens with the same logits,
and each bad option is one error line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers
from hf_models import tiny_hf_model

import lab
from lab import DecoderLM, ModelConfig
from lab.checkpoint import CheckpointSource
from lab.cli import main
from lab.config import without_later_defaults
from lab.derive import upcycle_checkpoint, upcycle_model
from lab.errors import LabError
from lab.mlp import MLP
from lab.moe import route
from lab.upcycle import UpcyclePlan, router_weight, upcycle_config

# (granularity G, shared experts N, routed experts E, top_k): groups of G - N routed slices.
SHAPES = [(2, 1, 4, 2), (4, 1, 6, 3), (4, 2, 8, 4), (3, 2, 3, 1)]
SHAPE_IDS = [f"G{g}-N{n}-E{e}-k{k}" for g, n, e, k in SHAPES]


def plan_of(shape, **options) -> UpcyclePlan:
    g, n, e, k = shape
    return UpcyclePlan(n_experts=e, top_k=k, granularity=g, shared_experts=n, **options)


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96,
                                  qkv_bias=False)).eval()
    with torch.no_grad():  # norms away from ones, so that no equality holds by accident
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_weights_are_the_stated_slices(dense, shape):
    """Shared expert = slices 0..N-1 (down x 2), gate 0; routed expert e = slice N + e % (G-N), down x (G-N);
    one router row per group of G-N experts."""
    G, N, E, k = shape
    plan = plan_of(shape)
    moe = upcycle_model(dense, plan)
    assert moe.config.shared_expert_ffn_dim == N * 96 // G and moe.config.moe_ffn_dim == 96 // G
    group = G - N
    for i in range(2):
        d, m = dense.layers[i].mlp, moe.layers[i].mlp
        gate, up, down = (d.gate_proj.weight.chunk(G, 0), d.up_proj.weight.chunk(G, 0), d.down_proj.weight.chunk(G, 1))
        assert torch.equal(m.shared_expert.gate_proj.weight, torch.cat(gate[:N], 0))
        assert torch.equal(m.shared_expert.up_proj.weight, torch.cat(up[:N], 0))
        assert torch.equal(m.shared_expert.down_proj.weight, torch.cat(down[:N], 1) * 2)
        assert torch.equal(m.shared_expert_gate.weight, torch.zeros(1, 32))
        for e in range(E):
            shard = N + e % group
            assert torch.equal(m.w_gate[e], gate[shard]) and torch.equal(m.w_up[e], up[shard])
            assert torch.equal(m.w_down[e], down[shard] * group)
        router = m.router.weight
        assert torch.equal(router, router_weight(plan, i, 32))
        for g in range(E // group):  # one row per group, and different rows for different groups
            assert all(torch.equal(router[g * group], router[g * group + j]) for j in range(group))
        assert len({tuple(router[g * group].tolist()) for g in range(E // group)}) == E // group


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gated_shared_expert_is_its_dense_slices_bit_for_bit(dense, shape):
    """sigmoid(0 . x) = 1/2 exactly and the down projection is doubled: x 2 and x 1/2 are exact in binary
    floating point, so the gated shared expert is the dense MLP's first N slices, to the bit."""
    G, N, _, _ = shape
    moe = upcycle_model(dense, plan_of(shape))
    x = torch.randn(500, 32, generator=torch.Generator().manual_seed(3))
    for i in range(2):
        d, m = dense.layers[i].mlp, moe.layers[i].mlp
        width = N * 96 // G
        slices = MLP(32, width)
        with torch.no_grad():
            slices.gate_proj.weight.copy_(d.gate_proj.weight[:width])
            slices.up_proj.weight.copy_(d.up_proj.weight[:width])
            slices.down_proj.weight.copy_(d.down_proj.weight[:, :width])
            gated = torch.sigmoid(m.shared_expert_gate(x)) * m.shared_expert(x)
            assert torch.equal(gated, slices(x))


@pytest.mark.parametrize("dispatch", ["grouped", "reference"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_upcycled_layer_equals_the_dense_mlp_with_topk_softmax(dense, shape, dispatch, ids):
    """The invariant, for any router: shared slices + whole groups of the other slices, combine weights
    summing to 1/(G-N), down x (G-N). Exact in real arithmetic; float32 rounding of two partial sums."""
    moe = upcycle_model(dense, plan_of(shape, router_init_std=1.0))  # a far from uniform router
    x = torch.randn(500, 32, generator=torch.Generator().manual_seed(4))
    for i in range(2):
        layer = moe.layers[i].mlp
        layer.dispatch = dispatch
        with torch.no_grad():
            got, stats = layer(x)
            expected = dense.layers[i].mlp(x)
        assert stats.tokens_per_expert.sum().item() == 500 * shape[3]
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(moe(ids).logits, dense(ids).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_a_routed_group_fires_whole(shape):
    """top_k is a multiple of G - N and a group's experts share one router row: tokens take whole groups."""
    G, N, E, k = shape
    group = G - N
    router = router_weight(plan_of(shape), 0, 32)
    chosen = route(torch.randn(2000, 32, generator=torch.Generator().manual_seed(0)), router, k,
                   "topk_softmax").experts // group
    counts = torch.stack([(chosen == g).sum(-1) for g in range(E // group)], dim=-1)
    assert set(counts.unique().tolist()) <= {0, group}


def test_softmax_topk_keeps_the_shared_part_exact_and_the_routed_part_close(dense, ids):
    """softmax_topk is not claimed exact: the routed part is He et al.'s weight scaling, close at init."""
    shape = (4, 2, 8, 4)
    exact = upcycle_model(dense, plan_of(shape))
    close = upcycle_model(dense, plan_of(shape, routing="softmax_topk"))
    for a, b in zip(exact.layers, close.layers):
        for name, p in a.mlp.shared_expert.named_parameters():
            assert torch.equal(p, dict(b.mlp.shared_expert.named_parameters())[name])
        assert torch.equal(b.mlp.w_down, a.mlp.w_down * (8 / 4))  # E * (G - N) / k instead of G - N
    with torch.no_grad():
        gap = (close(ids).logits - dense(ids).logits).abs().max().item()
    assert 0 < gap < 0.1


def test_in_memory_upcycle_is_the_streamed_checkpoint(tmp_path):
    """One rule, two transports, the same tensors to the bit (Drop-Upcycling and noise touch only the routed
    experts; the shared expert stays the dense slices)."""
    src = tmp_path / "dense"
    tiny_hf_model("qwen2", seed=2).save_pretrained(src)
    plan = UpcyclePlan(n_experts=6, top_k=3, granularity=4, shared_experts=1, drop_ratio=0.25, noise=0.01, seed=7)
    out = upcycle_checkpoint(src, tmp_path / "moe", plan)
    streamed = lab.load_pretrained(out).state_dict()
    source = lab.load_pretrained(src)
    in_memory = upcycle_model(source, plan).state_dict()
    assert streamed.keys() == in_memory.keys()
    for name in streamed:
        assert torch.equal(in_memory[name], streamed[name]), name
    shared = in_memory["layers.0.mlp.shared_expert.down_proj.weight"]
    assert torch.equal(shared, source.layers[0].mlp.down_proj.weight[:, :24] * 2)


def run_upcycle(src, out, *args) -> int:
    return main(["upcycle", str(src), str(out), *args])


@pytest.mark.parametrize("kind, n_layers, args, layers", [
    ("llama", 2, ["--num-experts", "6", "--top-k", "3", "--granularity", "4", "--shared-experts", "1"], [0, 1]),
    ("qwen2", 2, ["--num-experts", "8", "--top-k", "4", "--granularity", "4", "--shared-experts", "2"], [0, 1]),
    ("llama", 4, ["--num-experts", "4", "--top-k", "2", "--granularity", "3", "--shared-experts", "1",
                  "--every", "2"], [1, 3]),
], ids=["llama-G4-N1", "qwen2-G4-N2", "llama4-every2-G3-N1"])
def test_cli_writes_qwen2_moe_with_its_shared_expert_and_transformers_agrees(kind, n_layers, args, layers, ids,
                                                                              tmp_path, capsys):
    src = tmp_path / "dense"
    dense = tiny_hf_model(kind, seed=2, num_hidden_layers=n_layers)
    dense.save_pretrained(src)
    out = tmp_path / "moe"
    assert run_upcycle(src, out, *args) == 0
    printed = capsys.readouterr().out
    values = dict(zip(args[::2], args[1::2]))
    G, N = int(values["--granularity"]), int(values["--shared-experts"])
    assert f"shared experts {N}: the first {N} of {G} slices as one always-on shared expert" in printed
    assert "writes qwen2_moe" in printed and "it has a shared expert" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2_moe" and config["norm_topk_prob"] is True
    assert (config["moe_intermediate_size"], config["shared_expert_intermediate_size"]) == (96 // G, N * 96 // G)
    assert [i for i in range(config["num_hidden_layers"]) if i not in config["mlp_only_layers"]] == layers
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert sum("shared_expert." in n for n, _ in hf.named_parameters()) == 3 * len(layers)
    ours = lab.load_pretrained(out)
    assert ours.config.shared_expert_ffn_dim == N * 96 // G
    with torch.no_grad():
        hf_moe, hf_dense, lab_moe = hf(ids).logits, dense(ids).logits, ours(ids).logits
    torch.testing.assert_close(lab_moe, hf_moe)  # the lab and transformers read the same model
    torch.testing.assert_close(hf_moe, hf_dense, rtol=0, atol=1e-5)  # ... and it is the dense model


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "qwen2"
    tiny_hf_model("qwen2", seed=4).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def windowed_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "mistral"
    tiny_hf_model("mistral", seed=4, sliding_window=16).save_pretrained(path)
    return path


@pytest.mark.parametrize("args, message", [
    (["--granularity", "2", "--shared-experts", "-1"], "--shared-experts must be >= 0, got -1"),
    (["--shared-experts", "1"], "--shared-experts 1 needs --granularity of at least 2, got 1"),
    (["--granularity", "2", "--shared-experts", "2"], "--shared-experts 2 needs --granularity of at least 3, got 2"),
    (["--num-experts", "8", "--top-k", "3", "--granularity", "4", "--shared-experts", "1"],
     "--num-experts 8 is not a multiple of --granularity 4 - --shared-experts 1 = 3"),
    (["--num-experts", "6", "--top-k", "2", "--granularity", "4", "--shared-experts", "1"],
     "--top-k 2 is not a multiple of --granularity 4 - --shared-experts 1 = 3"),
    (["--num-experts", "4", "--top-k", "4", "--granularity", "5", "--shared-experts", "1"],
     "ffn_dim 96 is not divisible by --granularity 5"),
    (["--shared-experts", "two"], "argument --shared-experts: invalid int value: 'two'"),
    (["WINDOW", "--num-experts", "4", "--top-k", "2", "--granularity", "2", "--shared-experts", "1"],
     "--shared-experts: the output is qwen2_moe, which cannot express the source's sliding_window=16"),
])
def test_bad_shared_expert_options_give_one_line_and_write_nothing(dense_dir, windowed_dir, tmp_path, capsys,
                                                                   args, message):
    src = dense_dir
    if args[0] == "WINDOW":
        src, args = windowed_dir, args[1:]
    assert run_upcycle(src, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing half-written


def test_the_plan_refuses_what_the_cli_refuses():
    source = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=96)
    with pytest.raises(LabError, match="--shared-experts must be >= 0"):
        upcycle_config(source, UpcyclePlan(granularity=2, shared_experts=-1))
    assert upcycle_config(source, UpcyclePlan(n_experts=6, top_k=3, granularity=4,
                                              shared_experts=1)).shared_expert_ffn_dim == 24


def test_a_plan_without_shared_experts_keeps_its_recorded_digest():
    """Pipelines hash their plans; the new option at its default leaves the hash of an earlier plan alone."""
    plan = dataclasses.asdict(UpcyclePlan())
    assert "shared_experts" not in without_later_defaults(plan)
    assert without_later_defaults(dataclasses.asdict(UpcyclePlan(shared_experts=1)))["shared_experts"] == 1


def test_a_pipeline_stage_takes_shared_experts_and_names_a_bad_value():
    """The recipe's `upcycle` section takes UpcyclePlan's options, so shared_experts too, with the same checks."""
    from lab.paths import RECIPES_DIR
    from lab.pipeline import load_pipeline
    from lab.yaml_input import read_yaml

    values = read_yaml(RECIPES_DIR / "efficientscale-tiny.yaml")
    values["stages"][-1]["upcycle"] = {"n_experts": 6, "top_k": 3, "granularity": 4, "shared_experts": 1}
    stage = load_pipeline(values).stages[-1]
    assert stage.config.shared_expert_ffn_dim == 704 // 4 and stage.config.moe_ffn_dim == 704 // 4
    assert "granularity 4, shared experts 1" in stage.describe()
    values["stages"][-1]["upcycle"]["shared_experts"] = 4
    with pytest.raises(LabError, match=r"stages\[2\]\.upcycle: --shared-experts 4 needs --granularity of at least 5"):
        load_pipeline(values)
