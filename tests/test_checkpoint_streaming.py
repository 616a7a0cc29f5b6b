"""CheckpointSource + write_lab_checkpoint: the streaming path growth and upcycling are built on."""

from __future__ import annotations

import pytest
import torch

import lab
from lab.checkpoint import CheckpointSource, write_lab_checkpoint
from tests.hf_models import TINY, tiny_hf_model


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mixtral", "qwen2_moe"])
def test_identity_transform_copies_every_tensor(kind, tmp_path):
    tiny_hf_model(kind, seed=3).save_pretrained(tmp_path / "src")
    with CheckpointSource(tmp_path / "src") as src:
        assert src.model_type == kind
        write_lab_checkpoint(tmp_path / "out", src.config, src.tensor, model_type=src.model_type)
    a = lab.load_pretrained(tmp_path / "src")
    b = lab.load_pretrained(tmp_path / "out")
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_one_expert_and_tied_head(tmp_path):
    tiny_hf_model("mixtral", seed=1).save_pretrained(tmp_path / "moe")
    with CheckpointSource(tmp_path / "moe") as src:
        stacked = src.tensor("layers.0.mlp.w_up")
        assert stacked.shape[0] == src.config.n_experts
        torch.testing.assert_close(src.tensor("layers.0.mlp.w_up", expert=2), stacked[2])
    tiny_hf_model("llama", tie_word_embeddings=True).save_pretrained(tmp_path / "tied")
    with CheckpointSource(tmp_path / "tied") as src:
        assert src.config.tie_embeddings
        torch.testing.assert_close(src.tensor("lm_head.weight"), src.tensor("tok_embeddings.weight"))
        with pytest.raises(KeyError, match="no parameter"):
            src.tensor("layers.9.attn.q_proj.weight")


def test_written_shapes_follow_the_target_config(tmp_path):
    """The writer takes its layout from the config: a wrong-shaped tensor from `make` is an error, and
    nothing is left behind."""
    tiny_hf_model("llama").save_pretrained(tmp_path / "src")
    with CheckpointSource(tmp_path / "src") as src:
        bigger = src.config.replace(ffn_dim=src.config.ffn_dim * 2)
        with pytest.raises(RuntimeError, match="declared"):
            write_lab_checkpoint(tmp_path / "out", bigger, src.tensor)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


@pytest.mark.parametrize("kind", ["llama", "mixtral"])
def test_rows_read_only_the_slice_and_equal_the_whole_tensors_rows(kind, tmp_path):
    """What a process of a sharded run reads (lab.train.setup.load_shards): rows of a tensor, or experts of
    a stacked expert weight, equal to the same rows of the whole tensor, at any cut, even an empty one."""
    tiny_hf_model(kind, seed=4).save_pretrained(tmp_path / "src")
    with CheckpointSource(tmp_path / "src") as src:
        for name, shape in src.shapes.items():
            whole = src.tensor(name)
            for start, stop in ((0, shape[0]), (0, (shape[0] + 1) // 2), ((shape[0] + 1) // 2, shape[0]),
                                (shape[0], shape[0] + 3)):
                torch.testing.assert_close(src.rows(name, start, stop), whole[start:stop], rtol=0, atol=0,
                                           msg=f"{name}[{start}:{stop}]")
