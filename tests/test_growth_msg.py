"""Masked structural growth (lab.growth.msg, lab.msg_masks): exact at mask 0 whatever the new weights, the
masked model at mask 1 is bitwise the unmasked one, the ramp follows the step (so a resume is exact), and what
training exports after the ramp is a plain checkpoint that transformers reads with the lab's logits."""

from __future__ import annotations

import json

import pytest
import torch
from hf_models import tiny_hf_model
from safetensors.torch import load_file
from train_fixtures import records, tiny_recipe

from lab.checkpoint import load_pretrained
from lab.cli import main
from lab.derive import grow_checkpoint, grow_model
from lab.errors import LabError
from lab.growth import plan_growth
from lab.msg_masks import fold_masks, mask_ramp, ramp_to, set_masks
from lab.model import DecoderLM
from lab.train.loop import train

# Sums that now run over zeros (a new unit's, head's or hidden dimension's) round differently: the grown model
# computes the source's function to float rounding. Depth growth alone adds exact zeros to the residual: bitwise.
ROUNDING = 1e-5

GROWTHS = {  # the source: 2 layers, dim 64, 4 heads / 2 kv groups (head_dim 16), ffn 96
    "ffn": dict(ffn_dim=160),
    "heads, GQA": dict(dim=128, n_heads=8),
    "hidden": dict(dim=96, n_heads=6, n_kv_heads=2),
    "depth, stack": dict(n_layers=3),
    "depth, interpolate": dict(n_layers=4, depth="interpolate"),
    "everything": dict(dim=128, n_heads=8, ffn_dim=200, n_layers=5, depth="interpolate"),
}


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("msg") / "src"
    tiny_hf_model("qwen2", seed=3).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def source(source_dir):
    return load_pretrained(source_dir)


def tokens(vocab: int = 96) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def logits(model) -> torch.Tensor:
    return model.eval()(tokens()).logits


@pytest.mark.parametrize("growth", GROWTHS, ids=list(GROWTHS))
def test_mask_zero_computes_the_source_whatever_the_new_weights(source, growth):
    expected = logits(source)
    grown_by_seed = []
    for seed in (0, 1):  # two draws of the new weights
        grown = grow_model(source, plan_growth(source.config, method="msg", seed=seed, **GROWTHS[growth]))
        assert mask_ramp(grown.config).value == 0
        got = logits(grown)
        if growth.startswith("depth"):
            assert torch.equal(got, expected)
        else:
            torch.testing.assert_close(got, expected, rtol=0, atol=ROUNDING)
        grown_by_seed.append(grown.state_dict())
    new = [n for n in grown_by_seed[0] if not torch.equal(grown_by_seed[0][n], grown_by_seed[1][n])]
    assert new, "the new weights are drawn from the seed"
    # ...and they are live: at mask 1 the grown model is no longer the source.
    grown = grow_model(source, plan_growth(source.config, method="msg", ramp_steps=2, **GROWTHS[growth]))
    ramp_to(grown, 1)
    assert (logits(grown) - expected).abs().max() > 1e-3


def test_the_source_weights_are_kept_and_the_config_records_the_masks(source):
    plan = plan_growth(source.config, method="msg", ramp_steps=7, **GROWTHS["everything"])
    grown = grow_model(source, plan)
    old, new = source.state_dict(), grown.state_dict()
    # interpolate 2 -> 5: layers 0,0,0,1,1; the first of each is the source's, the others are new.
    assert mask_ramp(grown.config).to_dict() == {"ramp_steps": 7, "step": 0, "dim": 64, "ffn_dim": 96,
                                                 "new_heads": [2, 3, 6, 7], "new_layers": [1, 2, 4]}
    assert torch.equal(new["layers.3.mlp.down_proj.weight"][:64, :96], old["layers.1.mlp.down_proj.weight"])
    q_rows = torch.cat([torch.arange(0, 32), torch.arange(64, 96)])  # kv group j keeps its first two q heads
    assert torch.equal(new["layers.0.attn.q_proj.weight"][q_rows, :64], old["layers.0.attn.q_proj.weight"])
    assert torch.equal(new["tok_embeddings.weight"][:, :64], old["tok_embeddings.weight"])
    assert not any("msg_mask" in name for name in new), "the masks are buffers outside the state dict"


def test_folding_mask_one_equals_the_unmasked_model(source):
    plan = plan_growth(source.config, method="msg", ramp_steps=3, **GROWTHS["everything"])
    grown = grow_model(source, plan)
    set_masks(grown, mask_ramp(grown.config).at(3))  # every mask at 1
    masked = logits(grown)
    weights = {n: p.clone() for n, p in grown.state_dict().items()}
    fold_masks(grown)
    assert list(grown.named_buffers()) == [] and mask_ramp(grown.config) is None
    assert all(torch.equal(weights[n], p) for n, p in grown.state_dict().items()), "a multiply by 1 changes nothing"
    assert torch.equal(logits(grown), masked)
    plain = DecoderLM(grown.config)
    plain.load_state_dict(weights)
    assert torch.equal(logits(plain), masked)


def test_folding_inside_the_ramp_is_exact_without_hidden_growth_and_refused_with_it(source):
    grown = grow_model(source, plan_growth(source.config, method="msg", ramp_steps=4, ffn_dim=160, n_heads=8,
                                           n_layers=3, dim=128))
    with pytest.raises(LabError, match="hidden-size mask is at 0.5"):
        ramp_to(grown, 2) or fold_masks(grown)
    grown = grow_model(source, plan_growth(source.config, method="msg", ramp_steps=4, ffn_dim=160, n_layers=3))
    ramp_to(grown, 1)
    before = logits(grown)
    fold_masks(grown)
    assert list(grown.named_buffers()) == []
    torch.testing.assert_close(logits(grown), before, rtol=0, atol=1e-6)  # one rounding per scaled weight


def test_the_ramp_goes_from_0_to_1_over_its_steps_then_the_buffers_are_gone(source):
    grown = grow_model(source, plan_growth(source.config, method="msg", ramp_steps=4, ffn_dim=160, n_layers=3))
    mlp, new_block = grown.layers[0].mlp, grown.layers[2]
    for step, c in enumerate((0.0, 0.25, 0.5, 0.75)):
        assert not ramp_to(grown, step)
        assert torch.equal(mlp.msg_mask, torch.tensor([1.0] * 96 + [c] * 64))
        assert torch.equal(new_block.msg_mask, torch.full((64,), c)) and grown.layers[0].msg_mask is None
        assert mask_ramp(grown.config).step == step
    assert ramp_to(grown, 4)
    assert list(grown.named_buffers()) == [] and "msg_masks" not in grown.config.extra
    assert not ramp_to(grown, 5)  # plain from then on


def test_cli_writes_the_masks_and_verifies_exact(source_dir, tmp_path, capsys):
    out = tmp_path / "grown"
    assert main(["grow", str(source_dir), str(out), "--method", "msg", "--intermediate-size", "128",
                 "--num-layers", "3", "--ramp-steps", "5", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "function-preserving: yes" in printed and "masks ramp 0 -> 1 over the first 5 training steps" in printed
    assert float(printed.split("max |logit gap| ")[1].split(",")[0]) < ROUNDING
    config = json.loads((out / "config.json").read_text())
    assert config["msg_masks"] == {"ramp_steps": 5, "step": 0, "dim": 64, "ffn_dim": 96, "new_heads": [],
                                   "new_layers": [2]}


@pytest.mark.parametrize("args, message", [
    (["--method", "msg", "--noise", "0.1"], "--noise 0.1: msg copies nothing"),
    (["--method", "msg", "--map", "random"], "--map random: msg copies nothing"),
    (["--method", "fpi", "--ramp-steps", "5"], "--ramp-steps ramps MSG's masks: it needs --method msg"),
    (["--method", "msg", "--ramp-steps", "0"], "--ramp-steps: must be a positive integer"),
    (["--method", "msg", "GROWN"], "the source is on a masked-growth ramp"),
])
def test_cli_mistakes_give_one_line(source_dir, tmp_path, capsys, args, message):
    src = source_dir
    if args[-1] == "GROWN":
        src, args = tmp_path / "grown", args[:-1]
        grow_checkpoint(source_dir, src, plan_growth(load_pretrained(source_dir).config, method="msg", ffn_dim=128))
    assert main(["grow", str(src), str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def trained_source(tmp_path_factory):
    """A lab-trained source (the lab's tokenizer and corpus) and its MSG growth, ramp of 4 steps."""
    root = tmp_path_factory.mktemp("msg-train")
    train(tiny_recipe(train={"max_steps": 3, "eval_every": 0, "save_every": 0}), root / "src", progress=False)
    source = root / "src" / "final"
    plan = plan_growth(load_pretrained(source).config, method="msg", ramp_steps=4, dim=48, n_heads=6,
                       ffn_dim=96, n_layers=3)
    grow_checkpoint(source, root / "grown", plan)
    return root


def grown_recipe(root, max_steps: int = 6) -> dict:
    return tiny_recipe(model=None, init_from=str(root / "grown"),
                       train={"max_steps": max_steps, "eval_every": 0, "save_every": 1, "keep_checkpoints": 10})


def test_training_starts_at_the_source_loss_and_exports_a_plain_checkpoint(trained_source, tmp_path):
    from transformers import AutoModelForCausalLM

    root = trained_source
    train(grown_recipe(root), tmp_path / "run", progress=False)
    source_loss = records(root / "src", "eval")[-1]["val_loss_mean"]
    start = records(tmp_path / "run", "eval")[0]
    assert start["step"] == 0 and start["val_loss_mean"] == pytest.approx(source_loss, abs=1e-4)
    mid = json.loads((tmp_path / "run" / "checkpoints" / "step-000003" / "config.json").read_text())
    assert mid["msg_masks"]["step"] == 3  # inside the ramp the checkpoint keeps the masks
    for step in (4, 6):  # the masks folded at the end of step 4: plain checkpoints from then on
        config = json.loads((tmp_path / "run" / "checkpoints" / f"step-00000{step}" / "config.json").read_text())
        assert "msg_masks" not in config
    final = tmp_path / "run" / "final"
    ours = load_pretrained(final)
    assert list(ours.named_buffers()) == []
    theirs = AutoModelForCausalLM.from_pretrained(final).eval()
    ids = tokens(ours.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, rtol=0, atol=1e-5)


def test_resume_across_the_ramp_is_exact(trained_source, tmp_path):
    root = trained_source
    train(grown_recipe(root), tmp_path / "straight", progress=False)
    train(grown_recipe(root), tmp_path / "cut", max_steps=2, progress=False)
    cut = load_pretrained(tmp_path / "cut" / "final")  # stopped inside the ramp: the lab applies the masks
    assert mask_ramp(cut.config).step == 2 and cut.layers[2].msg_mask is not None
    train(grown_recipe(root), tmp_path / "cut", resume=True, progress=False)
    straight = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    losses = [[r["loss"] for r in records(tmp_path / run, "train")] for run in ("straight", "cut")]
    assert losses[0] == losses[1][-6:]


def test_pipeline_refuses_a_ramp_longer_than_its_stage():
    from lab.pipeline.recipe import load_pipeline

    values = {"pipeline": "p", "train": {"max_steps": 3}, "data": {"seq_len": 32},
              "stages": [{"name": "small", "model": tiny_recipe()["model"]},
                         {"name": "big", "grow": {"method": "msg", "ffn_dim": 96, "ramp_steps": 5}}]}
    with pytest.raises(LabError, match=r"stages\[1\].grow.ramp_steps: must be <= the stage's train.max_steps \(3\)"):
        load_pipeline(values)
    values["stages"][1]["grow"]["ramp_steps"] = 3
    assert load_pipeline(values).stages[1].plan.ramp_steps == 3
