"""Aux-loss-free load balancing (DeepSeek-V3, arXiv 2412.19437, 2.1.2; Wang et al. 2024, arXiv 2408.15664):
a per-expert bias that only chooses the experts, moved after each step against the load error.

Invariants: a zero bias (update rate 0) routes and computes exactly as no bias; the update is
rate * sign(mean load - load); the bias never gets a gradient; it is saved and resumed exactly; it
evens out a skewed router's load; transformers loads the export (and ignores the bias); bad values are
one error line.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import yaml
from hf_models import tiny_hf_model
from safetensors.torch import load_file

import lab
from lab import ModelConfig
from lab.cli import main
from lab.errors import LabError
from lab.moe import MoE, expert_bias_change, route
from lab.train import train
from lab.train.balance import expert_biases, update_expert_biases
from lab.train.step import train_step
from train_fixtures import records, tiny_recipe

TINY_MOE = dict(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=48, n_experts=4, top_k=2, max_seq_len=32)


def moe_model(balance: str, seed: int = 0, **fields) -> lab.DecoderLM:
    """The same weights whatever the balance (a state without expert biases loads them as zero)."""
    torch.manual_seed(seed)
    reference = lab.DecoderLM(ModelConfig(**{**TINY_MOE, **fields}))
    model = lab.DecoderLM(reference.config.replace(balance=balance))
    model.load_state_dict(reference.state_dict(), strict=True)
    return model


def tokens(seed: int, batch: int = 4, length: int = 16, vocab: int = 64) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- a zero bias changes nothing
def test_zero_bias_routes_exactly_as_no_bias():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(40, 16, generator=g), torch.randn(6, 16, generator=g)
    for routing in ("topk_softmax", "softmax_topk"):
        plain, biased = route(x, w, 2, routing), route(x, w, 2, routing, torch.zeros(6))
        assert torch.equal(plain.experts, biased.experts) and torch.equal(plain.weights, biased.weights)


def test_bias_only_chooses_the_weights_stay_unbiased():
    x, w = torch.eye(4), torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))  # token t prefers expert t
    bias = torch.tensor([-10.0, 0.0, 0.0, 10.0])  # expert 0 never chosen, expert 3 always
    r = route(x, w, 2, "softmax_topk", bias)
    assert (r.experts == 3).any(dim=-1).all() and not (r.experts == 0).any()
    assert torch.equal(r.weights, r.probs.gather(-1, r.experts))  # the unbiased probabilities


def test_aux_free_loss_has_no_load_balancing_term_and_the_layer_no_bias_gradient():
    ids = tokens(1)
    free, base = moe_model("aux_free"), moe_model("aux_loss")
    a, b = free(ids, labels=ids), base(ids, labels=ids)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.tokens_per_expert, b.tokens_per_expert)
    assert torch.equal(a.aux_loss, b.aux_loss)  # still reported, as a measure of balance
    assert torch.equal(a.loss, a.lm_loss + free.config.z_loss_coef * a.z_loss)  # ... but not minimised
    assert torch.equal(b.loss, b.lm_loss + 0.001 * b.aux_loss + 0.01 * b.z_loss)  # the default is unchanged
    a.loss.backward()
    names = {name for name, _ in free.named_parameters()}
    for layer in free.layers:
        assert layer.mlp.expert_bias.grad is None and not layer.mlp.expert_bias.requires_grad
    assert not any("expert_bias" in name for name in names)  # a buffer: no optimizer ever sees it
    assert {k for k in free.state_dict() if "expert_bias" in k} == {"layers.0.mlp.expert_bias",
                                                                     "layers.1.mlp.expert_bias"}
    assert not any("expert_bias" in k for k in base.state_dict())  # the default's state is unchanged


def expert_biases_of(state: dict) -> list[torch.Tensor]:
    return [t for k, t in state.items() if k.endswith("expert_bias")]


def test_rate_zero_trains_exactly_as_routing_without_a_bias():
    """The issue's acceptance: aux_free at update rate 0 equals balance "none" (no bias, no loss term),
    step for step, weights bit for bit."""
    runs = {}
    for balance in ("aux_free", "none"):
        model = moe_model(balance, balance_bias_rate=0.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = [train_step(model, [tokens(s), tokens(s + 100)], optimizer, 1e-2)["loss"] for s in range(4)]
        runs[balance] = (losses, model.state_dict())
    assert runs["aux_free"][0] == runs["none"][0]
    for name, value in runs["none"][1].items():
        assert torch.equal(runs["aux_free"][1][name], value), name
    assert all(not b.any() for b in expert_biases_of(runs["aux_free"][1]))


# ---------------------------------------------------------------------------- the update
def test_sign_update_moves_against_the_load_error_by_hand():
    counts = torch.tensor([[6, 2, 4, 4], [1, 1, 1, 5]])  # layer means 4 and 2
    expected = torch.tensor([[-0.25, 0.25, 0.0, 0.0], [0.25, 0.25, 0.25, -0.25]])
    assert torch.equal(expert_bias_change(counts, 0.25), expected)
    model = moe_model("aux_free")
    update_expert_biases(model, counts, 0.25)
    update_expert_biases(model, counts, 0.25)
    assert expert_biases(model) == (2 * expected).tolist()
    assert expert_biases(moe_model("none")) is None
    update_expert_biases(moe_model("none"), counts, 0.25)  # no biases: nothing to move, no error


def test_the_training_step_updates_from_its_counts_and_records_the_bias():
    model = moe_model("aux_free", balance_bias_rate=0.125)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    record = train_step(model, [tokens(3), tokens(4)], optimizer, 1e-3)  # counts summed over both micro-batches
    counts = torch.tensor(record["tokens_per_expert"])
    assert counts.sum().item() == 2 * 2 * 4 * 16 * 2  # layers x micro-batches x tokens x top_k
    assert record["balance"] == "aux_free"
    assert record["expert_bias"] == expert_bias_change(counts, 0.125).tolist()
    assert record["loss"] == pytest.approx(record["lm_loss"] + 0.01 * record["z_loss"], rel=1e-6)


def coefficient_of_variation(counts: list[list[int]]) -> float:
    load = torch.tensor(counts, dtype=torch.float64)
    return (load.std(dim=-1, unbiased=False) / load.mean(dim=-1)).mean().item()


def test_aux_free_evens_out_a_skewed_router():
    """A router skewed towards expert 0 (its row leans on a direction every token shares: ~85% of the tokens
    at the start) trained 30 steps: under aux_free the load varies across experts less than half as much as
    in the same run without balancing, which stays skewed."""
    cv = {}
    for balance in ("aux_free", "none"):
        model = moe_model(balance, seed=1, n_layers=1, top_k=1, balance_bias_rate=0.02)
        with torch.no_grad():
            shared = 0.02 * torch.randn(32, generator=torch.Generator().manual_seed(5))
            model.tok_embeddings.weight.add_(shared)
            router = model.layers[0].mlp.router.weight
            router.mul_(10.0)  # tokens differ in their choice...
            router[0] += 0.35 * shared / shared.norm()  # ... but most choose expert 0
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loads = [train_step(model, [tokens(s, batch=8)], optimizer, 1e-3)["tokens_per_expert"] for s in range(30)]
        assert coefficient_of_variation(loads[0]) > 1.3  # skewed at the start, under both
        cv[balance] = sum(coefficient_of_variation(load) for load in loads[-10:]) / 10
    assert cv["none"] > 1.2 and cv["aux_free"] < 0.5 * cv["none"], cv


# ---------------------------------------------------------------------------- state: resume, export
def test_resume_is_exact_with_the_bias(tmp_path):
    recipe = tiny_recipe(model={"n_experts": 4, "top_k": 2, "moe_ffn_dim": 32, "balance": "aux_free",
                                "balance_bias_rate": 0.01},
                         train={"max_steps": 6, "eval_every": 3, "save_every": 3, "sample_tokens": 0},
                         data={"grad_accum": 2})
    train(recipe, tmp_path / "straight", progress=False)
    train(recipe, tmp_path / "split", max_steps=3, progress=False)
    train(recipe, tmp_path / "split", resume=True, progress=False)
    a, b = records(tmp_path / "straight", "train"), records(tmp_path / "split", "train")
    assert [r["step"] for r in b] == list(range(1, 7))
    for key in ("loss", "aux_loss", "tokens_per_expert", "expert_bias"):
        assert [r[key] for r in b] == [r[key] for r in a], key
    assert any(v != 0 for layer in a[2]["expert_bias"] for v in layer)  # what the resumed run must read back
    wa = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "split" / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    stored = wa["model.layers.1.mlp.gate.e_score_correction_bias"]
    assert stored.tolist() == a[-1]["expert_bias"][1]  # the checkpoint holds the last step's bias
    config = json.loads((tmp_path / "split" / "final" / "config.json").read_text())
    assert (config["balance"], config["balance_bias_rate"]) == ("aux_free", 0.01)


def test_export_loads_in_transformers_which_routes_without_the_bias(tmp_path):
    from transformers import AutoModelForCausalLM

    model = moe_model("aux_free").eval()
    ids = tokens(7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a zero bias: no warning
        lab.save_pretrained(model, tmp_path / "zero")
    with torch.no_grad():
        model.layers[0].mlp.expert_bias.copy_(torch.tensor([0.5, -0.5, 0.25, 0.0]))
    with pytest.warns(UserWarning, match="transformers chooses experts without it"):
        lab.save_pretrained(model, tmp_path / "biased")
    ours = lab.load_pretrained(tmp_path / "biased")
    assert torch.equal(ours.layers[0].mlp.expert_bias, model.layers[0].mlp.expert_bias)
    assert torch.equal(ours(ids).logits, model(ids).logits)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "biased").eval()
    with torch.no_grad():
        unbiased = moe_model("aux_free").eval()(ids).logits
        torch.testing.assert_close(theirs(ids).logits, unbiased, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(theirs(ids).logits, ours(ids).logits, atol=1e-3)


def test_loading_into_a_model_built_on_meta_keeps_the_biases(tmp_path):
    """The sharded path reads each parameter's rows (lab.train.setup.load_shards); the biases are buffers and
    must come back too, or a resumed aux_free run would restart its balancing from zero."""
    from lab.train.setup import load_shards

    model = moe_model("aux_free").eval()
    with torch.no_grad():
        model.layers[1].mlp.expert_bias.copy_(torch.tensor([0.5, -0.5, 0.25, 0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.save_pretrained(model, tmp_path / "biased")
    with torch.device("meta"):
        empty = lab.DecoderLM(model.config)
    loaded = load_shards(empty, tmp_path / "biased", torch.device("cpu")).eval()
    assert torch.equal(loaded.layers[1].mlp.expert_bias, model.layers[1].mlp.expert_bias)
    assert torch.equal(loaded(tokens(3)).logits, model(tokens(3)).logits)


# ---------------------------------------------------------------------------- options and their refusals
@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "llama"
    tiny_hf_model("llama", seed=4).save_pretrained(path)
    return path


def test_upcycle_option_writes_the_balance_and_starts_from_zero_biases(dense, tmp_path, capsys):
    out = tmp_path / "moe"
    assert main(["upcycle", str(dense), str(out), "--num-experts", "4", "--balance", "aux_free",
                 "--balance-bias-rate", "0.002", "--verify"]) == 0
    assert "balance aux_free, bias rate 0.002" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["balance"], config["balance_bias_rate"]) == ("aux_free", 0.002)
    model = lab.load_pretrained(out)
    assert all(not layer.mlp.expert_bias.any() for layer in model.layers if isinstance(layer.mlp, MoE))


def test_in_memory_upcycle_starts_aux_free_from_zero_biases_and_keeps_the_function():
    from lab.derive import upcycle_model
    from lab.upcycle import UpcyclePlan

    torch.manual_seed(0)
    dense = lab.DecoderLM(ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=48, qkv_bias=False))
    moe = upcycle_model(dense, UpcyclePlan(n_experts=4, top_k=2, balance="aux_free", balance_bias_rate=0.003))
    assert (moe.config.balance, moe.config.balance_bias_rate) == ("aux_free", 0.003)
    assert all(torch.equal(layer.mlp.expert_bias, torch.zeros(4)) for layer in moe.layers)
    ids = tokens(8)
    torch.testing.assert_close(moe(ids).logits, dense(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--balance", "sideways"], "--balance: invalid choice: 'sideways'"),
    (["--balance-bias-rate", "-0.1"], "--balance-bias-rate: must be >= 0"),
    (["--balance-bias-rate", "nan"], "--balance-bias-rate: must be a finite number"),
])
def test_upcycle_refuses_bad_values_in_one_line(dense, tmp_path, capsys, args, message):
    assert main(["upcycle", str(dense), str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fields, message", [
    ({"balance": "sideways"}, "ModelConfig.balance='sideways': must be one of"),
    ({"balance_bias_rate": -1.0}, "ModelConfig.balance_bias_rate=-1.0: must be >= 0"),
    ({"balance_bias_rate": "fast"}, "ModelConfig.balance_bias_rate='fast': must be a finite number"),
])
def test_recipe_refuses_bad_values_in_one_line(tmp_path, capsys, fields, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(model={"n_experts": 4, **fields})))
    assert main(["train", "--recipe", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model" in err and message in err and len(err.strip().splitlines()) == 1, err


def test_pipeline_upcycle_refuses_a_bad_balance():
    from lab.pipeline import load_pipeline
    from test_pipeline import SMALL

    values = json.loads(json.dumps(SMALL))
    values["stages"][2]["upcycle"]["balance"] = "sideways"
    with pytest.raises(LabError, match=r"^pipeline stages\[2\].upcycle.balance: must be one of"):
        load_pipeline(values)
    values["stages"][2]["upcycle"].update(balance="aux_free", balance_bias_rate=0.01)
    assert load_pipeline(values).stages[2].config.balance == "aux_free"


@pytest.mark.slow
def test_two_processes_keep_the_bias_of_one(tmp_path):
    """Under torchrun (2 gloo processes) the counts are summed over processes before the update, so both
    processes move their biases alike and the run routes as the one-process run does, step by step."""
    from test_distributed import torchrun

    recipe = tiny_recipe(model={"n_experts": 4, "top_k": 2, "moe_ffn_dim": 32, "balance": "aux_free",
                                "balance_bias_rate": 0.01},
                         train={"max_steps": 3, "eval_every": 0, "save_every": 3, "sample_tokens": 0})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = torchrun("--recipe", path, "--out", tmp_path / "two")
    assert result.returncode == 0, result.stderr[-3000:]
    train(recipe, tmp_path / "one", progress=False)
    two, one = records(tmp_path / "two", "train"), records(tmp_path / "one", "train")
    first = torch.tensor(two[0]["tokens_per_expert"])
    assert first.sum(dim=-1).tolist() == [4 * 32 * 2] * 2  # the global batch, not one process's half
    assert two[0]["expert_bias"] == expert_bias_change(first, 0.01).tolist()
    # A process whose bias had drifted from rank 0's would route its half of the batch otherwise.
    for key in ("tokens_per_expert", "expert_bias"):
        assert [r[key] for r in two] == [r[key] for r in one], key
