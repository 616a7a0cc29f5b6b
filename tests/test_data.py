"""The shipped corpus and tokenizer, and the batches built from them: every domain in both splits,
validation disjoint from train, a lossless tokenizer that transformers opens beside a checkpoint,
batches that are a pure function of (seed, step), and one clear error for a bad file."""

from __future__ import annotations

import importlib.util
import json
import unicodedata
from collections import Counter

import pytest
import torch
import transformers

import lab
from lab import DecoderLM, ModelConfig
from lab.data import (DATA_DIR, DOMAINS, EOS_TOKEN, TrainBatches, corpus_stats, domain_prompts, eos_id,
                      load_documents, load_tokenizer, load_tokens, split_of, validation_batches, validation_token_sample)
from lab.errors import LabError


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def validation_docs():
    return load_documents(split="validation")


def _build_script():
    spec = importlib.util.spec_from_file_location("build_corpus", DATA_DIR / "build_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- corpus ----------------------------------------------------------------------------------------

def test_every_domain_has_train_and_validation_documents():
    counts = Counter((d.domain, d.split) for d in load_documents())
    assert {domain for domain, _ in counts} == set(DOMAINS)
    for domain in DOMAINS:
        assert counts[(domain, "validation")] > 0 and counts[(domain, "train")] > counts[(domain, "validation")]


def test_validation_is_disjoint_from_train():
    train = load_documents(split="train")
    validation = load_documents(split="validation")
    assert {d.split for d in train} == {"train"} and {d.split for d in validation} == {"validation"}
    assert not {d.text for d in train} & {d.text for d in validation}
    assert not {d.source for d in train} & {d.source for d in validation}


def test_split_is_a_function_of_domain_and_source():
    """The split of a document follows from its name alone, so rebuilding never moves a document."""
    for doc in load_documents():
        assert split_of(doc.domain, doc.source) == doc.split


def test_arithmetic_is_reproduced_and_correct():
    """The committed arithmetic documents are what the seeded generator makes, and every line is right."""
    generated = {d["source"]: d["text"] for d in _build_script().arithmetic_documents()}
    shipped = [d for d in load_documents() if d.domain == "arithmetic"]
    assert shipped and all(generated[d.source] == d.text for d in shipped)
    for line in shipped[0].text.split("\n"):
        left, right = line.split(" = ")
        a, op, b = left.split(" ")
        assert {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(right)


# --- tokenizer -------------------------------------------------------------------------------------

def test_corpus_text_is_nfc():
    """transformers 5 normalises a qwen2 checkpoint's input to NFC; the corpus is already NFC, so
    AutoTokenizer and `tokenizers` agree on it."""
    assert all(unicodedata.is_normalized("NFC", d.text) for d in load_documents())


def test_round_trip_is_lossless_on_every_domain(tokenizer, validation_docs):
    for domain in DOMAINS:
        docs = [d for d in validation_docs if d.domain == domain]
        for doc, enc in zip(docs, tokenizer.encode_batch([d.text for d in docs])):
            assert tokenizer.decode(enc.ids, skip_special_tokens=False) == doc.text, doc.source
    odd = "tabs\tand\r\nCRLF, nul \x00, emoji 🙂, accents é, 日本語, trailing spaces   "
    assert tokenizer.decode(tokenizer.encode(odd).ids) == odd


def test_tokenizer_shape(tokenizer):
    assert tokenizer.get_vocab_size() == 4096
    assert eos_id(tokenizer) == tokenizer.token_to_id(EOS_TOKEN) == 0
    assert tokenizer.encode("37 + 85 = 122").tokens[-3:] == ["1", "2", "2"]  # digits one by one
    assert tokenizer.normalizer is None  # nothing is lost before the bytes are encoded


@pytest.mark.parametrize("qkv_bias", [True, False])  # saved as qwen2, as llama
def test_auto_tokenizer_opens_a_saved_checkpoint(tmp_path, tokenizer, validation_docs, qkv_bias):
    """A checkpoint saved with the shipped tokenizer opens in transformers, which encodes and decodes
    exactly like the `tokenizers` library on every domain."""
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(vocab_size=tokenizer.get_vocab_size(), dim=32, n_layers=1, n_heads=2,
                                  ffn_dim=64, qkv_bias=qkv_bias)).eval()
    lab.save_pretrained(model, tmp_path / "ckpt", tokenizer_dir=DATA_DIR)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert auto.eos_token == EOS_TOKEN and auto.eos_token_id == eos_id(tokenizer)
    for domain in DOMAINS:
        doc = next(d for d in validation_docs if d.domain == domain)
        ids = auto(doc.text)["input_ids"]
        assert ids == tokenizer.encode(doc.text).ids
        assert auto.decode(ids) == doc.text
    reopened = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert reopened.generation_config.eos_token_id == eos_id(tokenizer)


# --- token streams and batches ---------------------------------------------------------------------

def test_load_tokens_joins_documents_with_eos(tokenizer):
    tokens = load_tokens("validation")
    assert tuple(tokens) == DOMAINS
    docs = load_documents(split="validation")
    for domain, stream in tokens.items():
        texts = [d.text for d in docs if d.domain == domain]
        assert stream.dtype == torch.int64 and stream.dim() == 1
        assert int((stream == eos_id(tokenizer)).sum()) == len(texts) and stream[-1] == eos_id(tokenizer)
        expected = [i for t in texts for i in tokenizer.encode(t).ids + [eos_id(tokenizer)]]
        assert torch.equal(stream, torch.tensor(expected))


def test_corpus_stats_count_what_load_tokens_encodes():
    stats = {(r["domain"], r["split"]): r for r in corpus_stats()}
    for split in ("train", "validation"):
        for domain, stream in load_tokens(split).items():
            row = stats[(domain, split)]
            assert row["tokens"] + row["documents"] == stream.numel()  # plus one EOS per document


def test_train_batches_are_a_pure_function_of_seed_and_step():
    stream = {"a": torch.arange(500), "b": torch.arange(500, 1000)}
    batches = TrainBatches(stream, seq_len=16, batch_size=8, seed=3)
    batch = batches.batch(7)
    assert batch.shape == (8, 16) and batch.dtype == torch.int64
    torch.testing.assert_close(TrainBatches(stream, 16, 8, seed=3).batch(7), batch, rtol=0, atol=0)
    assert not torch.equal(batches.batch(8), batch)
    assert not torch.equal(TrainBatches(stream, 16, 8, seed=4).batch(7), batch)
    # every row is a contiguous window of the joined streams
    torch.testing.assert_close(batch - batch[:, :1], torch.arange(16).expand(8, 16), rtol=0, atol=0)


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_slices_make_the_single_process_batch(world_size):
    batches = TrainBatches(load_tokens("validation"), seq_len=32, batch_size=8, seed=0)
    whole = batches.batch(5)
    parts = [batches.batch(5, rank, world_size) for rank in range(world_size)]
    assert all(p.shape == (8 // world_size, 32) for p in parts)
    rebuilt = torch.empty_like(whole)
    for rank, part in enumerate(parts):
        rebuilt[rank::world_size] = part
    torch.testing.assert_close(rebuilt, whole, rtol=0, atol=0)


def test_batch_size_must_divide_among_ranks():
    batches = TrainBatches({"a": torch.arange(100)}, seq_len=8, batch_size=6)
    with pytest.raises(LabError, match="divisible by world_size 4"):
        batches.batch(0, rank=0, world_size=4)
    with pytest.raises(LabError, match="longer than the train stream"):
        TrainBatches({"a": torch.arange(10)}, seq_len=11, batch_size=2)


def test_validation_batches_are_fixed_windows_from_the_start():
    tokens = {"a": torch.arange(100), "b": torch.arange(30)}
    out = validation_batches(tokens, seq_len=10, max_sequences=4)
    torch.testing.assert_close(out["a"], torch.arange(40).reshape(4, 10), rtol=0, atol=0)
    torch.testing.assert_close(out["b"], torch.arange(30).reshape(3, 10), rtol=0, atol=0)
    with pytest.raises(LabError, match="longer than the b validation stream"):
        validation_batches(tokens, seq_len=31)


def test_validation_token_sample_takes_domains_in_turn(tokenizer):
    sample = validation_token_sample(tokenizer, n_sequences=6, seq_len=16)
    firsts = validation_batches(load_tokens("validation"), 16, max_sequences=2)
    expected = [firsts[d][0] for d in DOMAINS] + [firsts[d][1] for d in DOMAINS[:2]]
    torch.testing.assert_close(sample, torch.stack(expected), rtol=0, atol=0)


def test_domain_prompts_come_from_validation_text(validation_docs):
    prompts = domain_prompts()
    assert set(prompts) == set(DOMAINS)
    for domain, prompt in prompts.items():
        assert prompt.strip() and any(d.text.startswith(prompt) for d in validation_docs if d.domain == domain)
    assert prompts["arithmetic"].endswith("=")


# --- bad input ---------------------------------------------------------------------------------------

def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_bad_files_give_one_line(tmp_path):
    with pytest.raises(LabError, match="no such corpus file") as e:
        load_documents(tmp_path / "missing.jsonl")
    _one_line(e)
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text(json.dumps({"domain": "code", "split": "train", "text": "x"}) + "\n{not json\n")
    with pytest.raises(LabError, match="corrupt.jsonl:2: not a corpus record") as e:
        load_documents(corrupt)
    _one_line(e)
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text(json.dumps({"domain": "code", "split": "train"}) + "\n")
    with pytest.raises(LabError, match="no_text.jsonl:1"):
        load_documents(no_text)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LabError, match="not UTF-8"):
        load_documents(binary)
    with pytest.raises(LabError, match="split must be one of"):
        load_documents(split="test")
    with pytest.raises(LabError, match="no such tokenizer file"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(LabError, match="not a tokenizer.json") as e:
        load_tokenizer(tmp_path)  # a folder holding tokenizer.json, as a checkpoint does
    _one_line(e)


def test_a_corpus_of_ones_own(tmp_path, tokenizer):
    """Any JSON Lines file of the same records works, including domains the lab does not ship."""
    path = tmp_path / "mine.jsonl"
    records = [{"domain": "poems", "split": "train", "text": "roses are red"},
               {"domain": "code", "split": "train", "text": "x = 1"},
               {"domain": "code", "split": "validation", "text": "y = 2"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    tokens = load_tokens("train", corpus=path, tokenizer=tokenizer)
    assert list(tokens) == ["code", "poems"]
    assert tokenizer.decode(tokens["poems"].tolist(), skip_special_tokens=False) == "roses are red" + EOS_TOKEN
