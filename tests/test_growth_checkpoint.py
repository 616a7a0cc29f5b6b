"""Grown checkpoints opened in transformers: FPI's exact cases give the source's logits (fp32, 1e-5)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from hf_models import tiny_hf_model

import lab
from lab.checkpoint import read_config
from lab.growth import plan_growth
from lab.derive import grow_checkpoint, grow_model

TOKENS = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """qwen2 with GQA (4 heads, 2 kv groups, q/k/v bias) and llama with MHA (4 heads, 4 kv heads)."""
    root = tmp_path_factory.mktemp("sources")
    paths = {"qwen2": root / "qwen2", "llama": root / "llama"}
    tiny_hf_model("qwen2", seed=5).save_pretrained(paths["qwen2"])
    tiny_hf_model("llama", seed=6, num_key_value_heads=4).save_pretrained(paths["llama"])
    (paths["qwen2"] / "tokenizer.json").write_text('{"not": "a real tokenizer, copied as it is"}')
    return paths


def hf_logits(path) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(TOKENS).logits


def grow(src, out, **request):
    source, _ = read_config(src)
    return grow_checkpoint(src, out, plan_growth(source, **request))


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("request_", [dict(dim=128, n_heads=8, ffn_dim=192),  # every width, integer ratios
                                      dict(ffn_dim=150),  # intermediate only, to a non-multiple
                                      dict(n_layers=3, depth="identity"),  # identity blocks
                                      dict(dim=128, n_heads=8, n_layers=4, depth="identity", noise=0.3)],
                         ids=["width", "ffn-150", "identity-depth", "width-depth-noise"])
def test_exact_growth_keeps_the_logits_in_transformers(sources, tmp_path, kind, request_):
    out = grow(sources[kind], tmp_path / "out", **request_)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == kind  # qwen2 stays qwen2, llama stays llama
    torch.testing.assert_close(hf_logits(out), hf_logits(sources[kind]), atol=1e-5, rtol=0)


def test_output_shapes_type_and_tokenizer(sources, tmp_path):
    out = grow(sources["qwen2"], tmp_path / "out", method="aki-pro", dim=128, n_heads=8, ffn_dim=256, n_layers=3)
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"],
            config["intermediate_size"], config["num_hidden_layers"]) == (128, 8, 2, 256, 3)
    assert (out / "tokenizer.json").read_text() == (sources["qwen2"] / "tokenizer.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary sibling left


def test_streaming_equals_in_memory(sources, tmp_path):
    """The checkpoint path and the notebook path are one rule: the same tensors, bit for bit."""
    source = lab.load_pretrained(sources["qwen2"])
    plan = plan_growth(source.config, method="aki-pro", dim=96, n_heads=6, ffn_dim=130, n_layers=3,
                       map="random", noise=0.2, seed=7)
    streamed = lab.load_pretrained(grow_checkpoint(sources["qwen2"], tmp_path / "out", plan)).state_dict()
    for name, p in grow_model(source, plan).state_dict().items():
        torch.testing.assert_close(streamed[name], p, rtol=0, atol=0, msg=name)
