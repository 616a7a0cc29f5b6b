"""Our model equals transformers' on the same checkpoint, in both directions."""

import pytest
import torch
import transformers
from hf_models import TINY, tiny_hf_model

import lab

KINDS = list(TINY)


def hf_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def lab_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", KINDS)
def test_load_transformers_checkpoint(kind, ids, tmp_path):
    hf = tiny_hf_model(kind)
    hf.save_pretrained(tmp_path / "hf")
    ours = lab.load_pretrained(tmp_path / "hf")
    torch.testing.assert_close(lab_logits(ours, ids), hf_logits(hf, ids))


@pytest.mark.parametrize("kind", KINDS)
def test_transformers_opens_lab_checkpoint(kind, ids, tmp_path):
    hf = tiny_hf_model(kind, seed=3)
    hf.save_pretrained(tmp_path / "hf")
    ours = lab.load_pretrained(tmp_path / "hf")
    lab.save_pretrained(ours, tmp_path / "lab")
    reopened = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "lab").eval()
    torch.testing.assert_close(hf_logits(reopened, ids), lab_logits(ours, ids))


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mixtral", "qwen2_moe"])
def test_greedy_generation_matches_transformers(kind, tmp_path):
    hf = tiny_hf_model(kind, seed=5)
    hf.save_pretrained(tmp_path / "hf")
    ours = lab.load_pretrained(tmp_path / "hf")
    prompt = torch.randint(0, 96, (1, 7), generator=torch.Generator().manual_seed(2))
    expected = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0,
                           eos_token_id=None, attention_mask=torch.ones_like(prompt))
    got = lab.generate(ours, prompt, max_new_tokens=20)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
     "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
])
def test_rope_scaling_matches_transformers(rope, ids, tmp_path):
    hf = tiny_hf_model("llama", rope_parameters=rope)
    hf.save_pretrained(tmp_path / "hf")
    ours = lab.load_pretrained(tmp_path / "hf")
    assert ours.config.rope_scaling["rope_type"] == rope["rope_type"]
    torch.testing.assert_close(lab_logits(ours, ids), hf_logits(hf, ids))
    lab.save_pretrained(ours, tmp_path / "lab")
    reopened = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "lab").eval()
    torch.testing.assert_close(hf_logits(reopened, ids), lab_logits(ours, ids))
