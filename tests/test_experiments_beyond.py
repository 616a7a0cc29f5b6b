"""The experiments beyond AquilaMoE's own claims (`balance`, `msg`, `llama_pro`; claims C16-C18), the
`not_above` kind of the rule, and training on some domains only (`data.domains`, what `llama_pro` needs).

Each experiment runs one seed of a few steps on the tiny source and corpus slice of test_experiments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lab
from lab.checkpoint import read_config
from lab.cli import main
from lab.errors import LabError
from lab.experiments.catalog import experiment
from lab.experiments.claims import verdict
from lab.train import load_recipe
from test_experiments import (check_layout, claim_keys, corpus, fake_experiment, one_thread, run_tiny,  # noqa: F401
                              source, tiny)
from train_fixtures import records, tiny_recipe


# ---------------------------------------------------------------------------- not_above, exactly
@pytest.mark.parametrize("a, b, expected", [
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], "holds"),  # equal is no worse
    ([1.005, 1.0, 0.5], [1.0, 1.0, 1.0], "holds"),  # within the tolerance above, or below, on every seed
    ([1.03, 1.02, 1.04], [1.0, 1.0, 1.0], "contradicted"),  # e = 0.03, 0.02, 0.04: mean 0.03 > 2 * 0.01 / sqrt(3)
    ([1.011, 1.5, 1.9], [1.0, 1.0, 1.0], "inconclusive"),  # above on every seed, but mean 0.47 < 2 * 0.44 / sqrt(3)
    ([1.05, 1.0, 1.05], [1.0, 1.0, 1.0], "inconclusive"),  # one seed within
])
def test_not_above_rule(a, b, expected):
    assert verdict(a, b, "not_above", 0.01) == expected


def test_not_above_needs_a_tolerance():
    with pytest.raises(LabError, match="a claim of kind not_above needs a tolerance >= 0"):
        verdict([1.0] * 3, [1.0] * 3, "not_above")


# ---------------------------------------------------------------------------- the experiments, end to end
def test_balance_runs_both_balances_from_the_same_weights(tmp_path, source, corpus):
    out = tmp_path / "out"
    run_tiny("balance", out, [0], tiny("balance", source, corpus, steps=4))
    values = check_layout(out, "balance", [0])[0]
    assert claim_keys("balance") <= set(values)
    init = out / "seed-0" / "init"
    configs = {key: read_config(init / key)[0] for key in ("aux-loss", "aux-free")}
    assert (configs["aux-loss"].balance, configs["aux-free"].balance) == ("aux_loss", "aux_free")
    weights = [lab.load_pretrained(init / key).state_dict() for key in ("aux-loss", "aux-free")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0] if "expert_bias" not in k)
    # Zero biases route as no bias does: the two runs start from the same loss.
    assert values["aux-free/start_loss"] == values["aux-loss/start_loss"]
    biases = [r["expert_bias"] for r in records(out / "seed-0" / "aux-free", "train")]
    assert biases and any(b != 0 for layer in biases[-1] for b in layer)
    assert not any("expert_bias" in r for r in records(out / "seed-0" / "aux-loss", "train"))


def test_msg_starts_at_the_source_and_ends_plain(tmp_path, source, corpus):
    out = tmp_path / "out"
    settings = tiny("msg", source, corpus, steps=4)
    assert settings.ramp == 1  # a quarter of the steps
    run_tiny("msg", out, [0], settings)
    values = check_layout(out, "msg", [0])[0]
    assert claim_keys("msg") <= set(values)
    assert abs(values["msg/grown_loss"] - values["source/loss"]) <= 1e-4  # C17's invariant
    assert abs(values["fpi/grown_loss"] - values["source/loss"]) <= 1e-5
    grown = json.loads((out / "seed-0" / "init" / "msg" / "config.json").read_text())
    assert grown["hidden_size"] == 64 and grown["msg_masks"]["ramp_steps"] == 1
    # The ramp ended inside the run: the masks folded, the final checkpoint is a plain model.
    assert "msg_masks" not in json.loads((out / "seed-0" / "msg" / "final" / "config.json").read_text())
    with pytest.raises(LabError, match="setting ramp_steps: must be <= steps"):
        tiny("msg", source, corpus, steps=4, ramp_steps=5)


def test_llama_pro_trains_on_one_domain_and_new_blocks_only(tmp_path, source, corpus):
    out = tmp_path / "out"
    run_tiny("llama_pro", out, [0], tiny("llama_pro", source, corpus, steps=3))
    values = check_layout(out, "llama_pro", [0])[0]
    assert claim_keys("llama_pro") <= set(values)
    seed = out / "seed-0"
    assert values["new-blocks/start_loss"] == values["all/start_loss"]
    assert values["new-blocks/start_other_loss"] == values["all/start_other_loss"]
    meta = json.loads((seed / "new-blocks" / "meta.json").read_text())
    assert meta["recipe"]["data"]["domains"] == ["code"] and meta["recipe"]["train"]["trainable"] == "new-blocks"
    inserted = read_config(seed / "init" / "new-blocks")[0].extra["inserted_layers"]
    assert inserted == [2]  # 2 -> 3 layers, the new block after the last one
    before = lab.load_pretrained(seed / "init" / "new-blocks").state_dict()
    after = lab.load_pretrained(seed / "new-blocks" / "final").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("layers.2.") for k in changed)
    with pytest.raises(LabError, match="setting domain: must be one of"):
        tiny("llama_pro", source, corpus, domain="python")


# ---------------------------------------------------------------------------- data.domains
def test_data_domains_restrict_the_training_stream(corpus):
    from lab import data
    from lab.distributed import DistInfo
    from lab.train.setup import base_config, load_data

    recipe = load_recipe(tiny_recipe(data={"corpus": str(corpus), "domains": ["code"]}))
    assert recipe.data.domains == ("code",)
    loaded = load_data(recipe, base_config(recipe), DistInfo(device=torch.device("cpu")))
    code = data.load_tokens("train", corpus=corpus)["code"]
    assert loaded.batches.n_tokens == code.numel() and torch.equal(loaded.batches.stream, code)
    assert set(loaded.validation) == set(data.DOMAINS)  # validation reads every domain
    wrong = load_recipe(tiny_recipe(data={"corpus": str(corpus), "domains": ["cod"]}))
    with pytest.raises(LabError, match="recipe data.domains: 'cod' is not a domain of the training data"):
        load_data(wrong, base_config(wrong), DistInfo(device=torch.device("cpu")))


def test_data_domains_restrict_token_shards(tmp_path):
    from lab.corpus import shards

    entries = {d: shards.write_stream(tmp_path, "train", d, np.full(n, i, dtype=np.uint16))
               for i, (d, n) in enumerate((("english", 5), ("code", 7), ("arithmetic", 3)))}
    shards.write_manifest(tmp_path, {"format": shards.FORMAT,
                                     "splits": {"train": {d: {"shards": e} for d, e in entries.items()}}})
    assert len(shards.open_joined(tmp_path, "train")) == 15
    picked = shards.open_joined(tmp_path, "train", ("arithmetic", "english"))  # the manifest's order
    assert picked.window(0, 8).tolist() == [0] * 5 + [2] * 3


@pytest.mark.parametrize("domains, message", [
    ([], "must be a non-empty list of distinct domains"),
    (["code", "code"], "must be a non-empty list of distinct domains"),
    ("code", "must be a list"),
    ([3], "must be a string"),
])
def test_bad_data_domains_are_refused(domains, message):
    with pytest.raises(LabError, match=f"recipe data.domains: {message}"):
        load_recipe(tiny_recipe(data={"domains": domains}))


def test_a_recipe_without_domains_keeps_its_digest():
    """Runs begun before data.domains existed resume: the default is left out of the digest."""
    from lab.config import without_later_defaults

    recipe = load_recipe(tiny_recipe())
    assert recipe.to_dict()["data"]["domains"] is None
    assert "domains" not in without_later_defaults(recipe.to_dict())["data"]
    assert load_recipe(tiny_recipe(data={"domains": ["code"]})).digest() != recipe.digest()


# ---------------------------------------------------------------------------- the claims command
def test_claims_command_judges_c16_to_c18(tmp_path, capsys):
    def balance(seed):
        return {"aux-free/load_cv": 0.10 + 0.01 * seed, "aux-loss/load_cv": 0.50 + 0.02 * seed,  # C16 holds
                "aux-free/trained_loss": 3.63 + 0.01 * seed, "aux-loss/trained_loss": 3.60}  # C16b contradicted

    def msg(seed):
        return {"msg/grown_loss": 3.61775, "source/loss": 3.6177,  # C17 holds (5e-5 apart)
                "msg/trained_loss": 3.70 + 0.05 * (seed - 1), "fpi/trained_loss": 3.70}  # C17b inconclusive

    def llama_pro(seed):
        return {"new-blocks/other_loss": 3.9 + 0.01 * seed, "all/other_loss": 3.8}  # C18 contradicted

    dirs = [fake_experiment(tmp_path / name, name, [0, 1, 2], values)
            for name, values in (("balance", balance), ("msg", msg), ("llama_pro", llama_pro))]
    assert main(["experiments", "claims", *map(str, dirs), "--json", str(tmp_path / "claims.json"),
                 "--markdown", str(tmp_path / "claims.md")]) == 0
    capsys.readouterr()
    written = json.loads((tmp_path / "claims.json").read_text())
    assert {e["id"]: e["verdict"] for e in written["claims"]} == {
        "C16": "holds", "C16b": "contradicted", "C17": "holds", "C17b": "inconclusive", "C18": "contradicted"}
    c16b = next(e for e in written["claims"] if e["id"] == "C16b")
    assert c16b["kind"] == "not_above" and c16b["tolerance"] == 0.01
    assert "not_above: with e_s = a_s - b_s per seed" in written["rule"]
    table = (tmp_path / "claims.md").read_text()
    assert "C16b: With aux-free balancing, the LM loss is no worse than with the load-balancing loss. " \
           "(a at most 0.01 above b)" in table
