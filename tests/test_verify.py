"""`lab.verify`: a checkpoint compared with itself has no logit gap and the same loss; a changed copy
has a gap. Tokens come from real text when the checkpoint holds a tokenizer, random ids otherwise."""

from __future__ import annotations

import pytest
import torch

import lab
from lab import DecoderLM, ModelConfig
from lab.data import DATA_DIR, load_tokenizer, validation_token_sample
from lab.errors import LabError
from lab.verify import verification_tokens, verify_against_source

VOCAB = 4096  # the shipped tokenizer's


def save_model(path, vocab_size=VOCAB, seed=0, tokenizer=True, noise=0.0):
    torch.manual_seed(seed)
    model = DecoderLM(ModelConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                                  ffn_dim=64)).eval()
    if noise:
        with torch.no_grad():
            model.layers[1].mlp.down_proj.weight.add_(noise)
    lab.save_pretrained(model, path, tokenizer_dir=DATA_DIR if tokenizer else None)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("verify") / "src")


def test_a_checkpoint_against_itself_has_no_gap(source):
    report = verify_against_source(source, source, n_sequences=4, seq_len=32)
    assert report.max_logit_gap == 0.0
    assert report.source_loss == report.output_loss
    assert (report.n_sequences, report.seq_len) == (4, 32)
    assert report.tokens_from.startswith("validation text of the shipped corpus")


def test_a_changed_copy_has_a_gap(source, tmp_path):
    changed = save_model(tmp_path / "changed", noise=0.05)
    report = verify_against_source(source, changed, n_sequences=2, seq_len=32)
    assert report.max_logit_gap > 1e-3
    assert report.source_loss != report.output_loss


def test_tokens_are_the_corpus_validation_text_encoded_with_the_checkpoints_tokenizer(source):
    tokens, origin = verification_tokens(source, VOCAB, n_sequences=3, seq_len=16)
    expected = validation_token_sample(load_tokenizer(source / "tokenizer.json"), 3, 16)
    torch.testing.assert_close(tokens, expected, rtol=0, atol=0)
    assert str(source / "tokenizer.json") in origin


def test_given_text_is_encoded_instead(source):
    text = "12 + 30 = 42\n" * 20
    tokens, origin = verification_tokens(source, VOCAB, n_sequences=2, seq_len=16, text=text)
    ids = load_tokenizer(source).encode(text).ids
    torch.testing.assert_close(tokens, torch.tensor(ids[:32]).reshape(2, 16), rtol=0, atol=0)
    assert origin.startswith("the given text")
    short, _ = verification_tokens(source, VOCAB, n_sequences=2, seq_len=512, text="1 + 1 = 2")
    assert short.shape == (1, len(load_tokenizer(source).encode("1 + 1 = 2").ids))
    report = verify_against_source(source, source, n_sequences=2, seq_len=16, text=text)
    assert report.max_logit_gap == 0.0 and (report.n_sequences, report.seq_len) == (2, 16)


def test_without_a_tokenizer_random_ids_stand_in(tmp_path):
    bare = save_model(tmp_path / "bare", vocab_size=64, tokenizer=False)
    tokens, origin = verification_tokens(bare, 64, n_sequences=2, seq_len=8, seed=5)
    again, _ = verification_tokens(bare, 64, n_sequences=2, seq_len=8, seed=5)
    assert tokens.shape == (2, 8) and int(tokens.max()) < 64 and torch.equal(tokens, again)
    assert origin.startswith("random token ids") and "no tokenizer.json" in origin
    with pytest.raises(LabError, match="no tokenizer.json to encode"):
        verification_tokens(bare, 64, text="hello")


def test_ids_outside_the_vocabulary_are_an_error(tmp_path):
    small = save_model(tmp_path / "small", vocab_size=300)  # the tokenizer has 4096 tokens
    with pytest.raises(LabError, match="outside the model's vocabulary of 300"):
        verify_against_source(small, small, n_sequences=2, seq_len=32)


def test_different_vocabularies_do_not_compare(source, tmp_path):
    other = save_model(tmp_path / "other", vocab_size=VOCAB + 8)
    with pytest.raises(LabError, match="vocabulary of 4104 tokens"):
        verify_against_source(source, other, n_sequences=2, seq_len=16)
