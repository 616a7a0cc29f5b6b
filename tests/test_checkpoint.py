"""Checkpoint I/O: every layout the lab writes opens in transformers with the same logits; sharding,
dtypes, atomic writes; bad directories give one clear error naming the file or the tensor."""

import json

import pytest
import torch
import transformers
from hf_models import tiny_hf_model
from safetensors.torch import load_file, save_file

import lab
from lab import DecoderLM, ModelConfig
from lab.checkpoint import hf_model_type, read_config
from lab.errors import CheckpointError

IDS = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(0))
BASE = dict(vocab_size=96, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, ffn_dim=96)


def lab_model(seed=0, **fields) -> DecoderLM:
    torch.manual_seed(seed)
    model = DecoderLM(ModelConfig(**{**BASE, **fields}))
    with torch.no_grad():  # random biases, norms and routers too, so that nothing matches by accident
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def assert_transformers_agrees(model, path):
    reopened = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reopened(IDS).logits, model(IDS).logits)
    return reopened


@pytest.mark.parametrize("fields, model_type", [
    (dict(qkv_bias=False), "llama"),
    (dict(qkv_bias=True), "qwen2"),
    (dict(qkv_bias=False, sliding_window=8), "mistral"),
    (dict(qkv_bias=True, tie_embeddings=True), "qwen2"),
    (dict(qkv_bias=False, head_dim=24), "llama"),
    (dict(qkv_bias=False, n_experts=4, top_k=2), "mixtral"),
    (dict(qkv_bias=False, n_experts=4, top_k=2, sliding_window=8), "mixtral"),
    (dict(qkv_bias=True, n_experts=4, top_k=2), "qwen2_moe"),
    (dict(qkv_bias=False, n_experts=4, top_k=2, routing="softmax_topk"), "qwen2_moe"),
    (dict(qkv_bias=True, n_experts=4, top_k=1, moe_layers=(1,), moe_ffn_dim=32), "qwen2_moe"),
    (dict(qkv_bias=True, n_experts=4, top_k=2, shared_expert_ffn_dim=48), "qwen2_moe"),
])
def test_lab_model_round_trips_through_transformers(fields, model_type, tmp_path):
    model = lab_model(**fields)
    assert hf_model_type(model.config) == model_type
    lab.save_pretrained(model, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["model_type"] == model_type
    assert_transformers_agrees(model, tmp_path / "ckpt")
    again = lab.load_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(again(IDS).logits, model(IDS).logits)
    assert again.config.shared_expert_ffn_dim == model.config.shared_expert_ffn_dim
    # No zero-size tensor: a qwen2_moe without a shared expert gets a one-unit one of zeros instead.
    from safetensors import safe_open

    for path in (tmp_path / "ckpt").glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            assert all(0 not in f.get_slice(key).get_shape() for key in f.keys()), path


def test_qwen2_moe_with_dense_layers_loads(tmp_path):
    hf = tiny_hf_model("qwen2_moe", num_hidden_layers=3, mlp_only_layers=[1])
    hf.save_pretrained(tmp_path / "hf")
    ours = lab.load_pretrained(tmp_path / "hf")
    assert ours.config.moe_layers == (0, 2)
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS).logits, hf(IDS).logits)


def test_mistral_sliding_window_matches_transformers(tmp_path):
    hf = tiny_hf_model("mistral", sliding_window=6)
    hf.save_pretrained(tmp_path / "hf")
    ours = lab.load_pretrained(tmp_path / "hf")
    assert ours.config.sliding_window == 6
    with torch.no_grad():
        torch.testing.assert_close(ours(IDS).logits, hf(IDS).logits)


def test_sharded_checkpoint_with_index(tmp_path):
    model = lab_model(n_experts=4, top_k=2)
    lab.save_pretrained(model, tmp_path / "ckpt", max_shard_size="40KB")
    index = json.loads((tmp_path / "ckpt" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (tmp_path / "ckpt" / "model.safetensors").exists()
    assert_transformers_agrees(model, tmp_path / "ckpt")
    again = lab.load_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(again(IDS).logits, model(IDS).logits)


def test_dtype_is_kept(tmp_path):
    model = lab_model(n_experts=4, top_k=2).to(torch.bfloat16)
    lab.save_pretrained(model, tmp_path / "ckpt")
    tensors = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    again = lab.load_pretrained(tmp_path / "ckpt")
    assert again.config.dtype == "bfloat16" and again.tok_embeddings.weight.dtype == torch.bfloat16
    assert lab.load_pretrained(tmp_path / "ckpt", dtype=torch.float32).tok_embeddings.weight.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(again(IDS).logits, model(IDS).logits)


def test_save_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    model = lab_model()
    target = tmp_path / "ckpt"
    lab.save_pretrained(model, target)
    with pytest.raises(CheckpointError, match="already exists"):
        lab.save_pretrained(model, target)
    before = sorted(p.name for p in tmp_path.iterdir())

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("lab.checkpoint.io.write_safetensors", failing_save)
    with pytest.raises(OSError):
        lab.save_pretrained(lab_model(seed=1), target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary left, old one intact
    monkeypatch.undo()
    lab.load_pretrained(target)
    lab.save_pretrained(lab_model(seed=1), target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---------------------------------------------------------------- bad input
@pytest.fixture
def saved(tmp_path):
    lab.save_pretrained(lab_model(), tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        lab.load_pretrained(tmp_path / "nothing")


def test_no_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        lab.load_pretrained(tmp_path)


def test_unknown_model_type(saved):
    cfg = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match=r"config\.json: unsupported model_type 'gpt2'"):
        lab.load_pretrained(saved)


def test_invalid_json(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        lab.load_pretrained(saved)


def test_impossible_config_names_the_field(saved):
    cfg = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**cfg, "num_key_value_heads": 3}))
    with pytest.raises(CheckpointError, match=r"config\.json: ModelConfig\.n_kv_heads=3"):
        lab.load_pretrained(saved)


def test_missing_tensor(saved):
    tensors = load_file(saved / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.self_attn\.k_proj\.weight'"):
        lab.load_pretrained(saved)


def test_wrong_shape(saved):
    tensors = load_file(saved / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(95, 64)
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.up_proj\.weight' "
                                              r"has shape \[95, 64\], config\.json implies \[96, 64\]"):
        lab.load_pretrained(saved)


def test_pickled_weights_are_refused(saved):
    (saved / "model.safetensors").rename(saved / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: pickled weights are never loaded"):
        lab.load_pretrained(saved)


def test_corrupt_safetensors(saved):
    (saved / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        lab.load_pretrained(saved)


def test_unsupported_rope_scaling(saved):
    cfg = json.loads((saved / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="RoPE type 'yarn' is not supported"):
        read_config(saved)


def test_transformers_4_field_names(saved):
    """A config.json in transformers 4.x style: rope_theta and torch_dtype only."""
    cfg = json.loads((saved / "config.json").read_text())
    for key in ("rope_parameters", "dtype"):
        cfg.pop(key)
    cfg["rope_theta"] = 5000.0
    (saved / "config.json").write_text(json.dumps(cfg))
    config, model_type = read_config(saved)
    assert (config.rope_theta, config.dtype, model_type) == (5000.0, "float32", "qwen2")


def test_streaming_writer_files_read_back_exactly(tmp_path):
    from safetensors import safe_open

    from lab.checkpoint.safetensors_stream import TensorEntry, write_safetensors

    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "empty": torch.zeros(0, 4),
               "c": torch.arange(6, dtype=torch.int64).reshape(2, 3), "h": torch.randn(2, 2).half()}
    made = []
    entries = [TensorEntry(k, tuple(t.shape), t.dtype, lambda k=k, t=t: made.append(k) or t) for k, t in tensors.items()]
    write_safetensors(tmp_path / "x.safetensors", entries)
    assert made == list(tensors)  # each made once, in order
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}
        for k, t in tensors.items():
            assert torch.equal(f.get_tensor(k), t)


def test_tokenizer_files_are_copied_along(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{}")
    (tmp_path / "tok" / "unrelated.txt").write_text("x")
    lab.save_pretrained(lab_model(), tmp_path / "ckpt", tokenizer_dir=tmp_path / "tok")
    assert (tmp_path / "ckpt" / "tokenizer.json").read_text() == "{}"
    assert not (tmp_path / "ckpt" / "unrelated.txt").exists()
