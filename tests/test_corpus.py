"""The big corpus's machinery on small inputs (no network, no big build): text extraction, the
decontamination rule, shards written and read back exactly, batches from shards equal to batches from
tensors, a training run on shards, resident memory that does not grow with the corpus, and the
command's refusals."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch

from lab import data
from lab.cli import main
from lab.corpus import build, shards
from lab.corpus.decontaminate import contaminated
from lab.corpus.documents import arithmetic_documents
from lab.corpus.text import DOCBOOK_MAIN, html_main_text, render_rst, rst_sections
from lab.errors import LabError
from lab.train import train
from train_fixtures import records, tiny_recipe

# --- text ------------------------------------------------------------------------------------------


def test_rst_is_rendered_as_help_shows_it():
    text = ".. index:: pair: statement; for\n   single: loop\n\nThe :keyword:`for` statement calls " \
           ":func:`~os.path.join` on ``items``; see :ref:`the tutorial <tut-for>`."
    assert render_rst(text) == 'The "for" statement calls "join" on "items"; see "the tutorial".'


def test_rst_sections_cut_at_headings_and_drop_bare_headings():
    body = "word " * 50
    text = f"Title\n=====\n\n{body}\n\nEmpty\n-----\n\nNext\n----\n\n{body}\n"
    sections = rst_sections(text)
    assert [s.split("\n")[0] for s in sections] == ["Title", "Next"]


def test_html_main_text_keeps_the_main_column_only():
    html = ('<html><div id="nav">Menu</div><div class="yui-g"><h1>Models<a class="headerlink">¶</a></h1>'
            '<p>A model is <code>the</code> source.</p><script>var x;</script><pre>x = 1\ny = 2</pre></div>'
            '<div id="sidebar">Links</div><p>after</p></html>')
    assert html_main_text(html) == "Models\n\nA model is the source.\n\nx = 1\ny = 2"
    docbook = '<div class="navheader">Prev Next</div><div class="sect1"><p>SELECT rows</p></div>' \
              '<div class="navfooter">Home</div>'
    assert html_main_text(docbook, *DOCBOOK_MAIN) == "SELECT rows"


# --- decontamination -------------------------------------------------------------------------------


def test_training_documents_sharing_a_long_ngram_with_validation_are_flagged():
    sentence = "the quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat"
    validation = [{"domain": "english", "text": f"Intro. {sentence}. End."},
                  {"domain": "chinese", "text": "床前明月光，疑是地上霜。举头望明月，低头思故乡。"}]
    train = [{"domain": "english", "text": f"Other words. {sentence.upper()}!"},              # 13+ shared words
             {"domain": "english", "text": " ".join(sentence.split()[:12]) + " and more"},    # only 12
             {"domain": "code", "text": sentence},                                            # other domain
             {"domain": "chinese", "text": "《静夜思》\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"},
             {"domain": "chinese", "text": "床前明月光，疑是天上霜。"},
             {"domain": "arithmetic", "text": "1 + 1 = 2"}]
    assert contaminated(train, validation) == [True, False, False, True, False, False]


# --- shards ----------------------------------------------------------------------------------------


@pytest.fixture
def small_shards(monkeypatch):
    monkeypatch.setattr(shards, "SHARD_TOKENS", 1000)  # several shards from a small stream


def _docs_of_shipped_corpus() -> list[dict]:
    return [{"domain": d.domain, "source": d.source, "text": d.text, "split": d.split} for d in data.load_documents()]


def test_shards_hold_exactly_the_stream_load_tokens_gives(tmp_path, small_shards):
    """The shipped corpus written as shards reads back, domain by domain, as the same ids as load_tokens."""
    manifest = build.write_corpus(tmp_path, _docs_of_shipped_corpus(), [], Counter(), log=lambda *a: None)
    for split in data.SPLITS:
        streams = shards.open_split(tmp_path, split)
        by_order = {}
        for domain, stream in streams.items():
            # load_tokens keeps file order; the shards order documents by a hash of their names.
            docs = sorted((d for d in data.load_documents(split=split) if d.domain == domain),
                          key=lambda d: hashlib.sha256(d.source.encode()).hexdigest())
            expected = data.encode_documents(docs, data.load_tokenizer(), data.eos_id(data.load_tokenizer()))
            assert len(stream) == expected.numel() == manifest["splits"][split][domain]["tokens"]
            assert torch.equal(torch.from_numpy(stream.window(0, len(stream)).astype(np.int64)), expected)
            by_order[domain] = expected
        assert len(manifest["splits"][split]["code"]["shards"]) > 1
    for entry in manifest["splits"]["train"].values():
        for shard in entry["shards"]:
            assert hashlib.sha256((tmp_path / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]


def test_windows_cross_shard_boundaries(tmp_path, small_shards):
    ids = np.arange(3500) % 4096
    entries = shards.write_stream(tmp_path, "train", "english", ids)
    assert [e["tokens"] for e in entries] == [1000, 1000, 1000, 500]
    stream = shards.ShardedStream(tmp_path, entries)
    for start, length in [(0, 10), (995, 10), (990, 2020), (3490, 10)]:
        assert stream.window(start, length).tolist() == ids[start:start + length].tolist()
    with pytest.raises(IndexError):
        stream.window(3495, 10)


def test_the_same_build_gives_the_same_manifest_byte_for_byte(tmp_path):
    docs = _docs_of_shipped_corpus()
    build.write_corpus(tmp_path / "a", docs, [], Counter(), log=lambda *a: None)
    build.write_corpus(tmp_path / "b", list(reversed(docs)), [], Counter(), log=lambda *a: None)
    a, b = (tmp_path / "a" / shards.MANIFEST).read_bytes(), (tmp_path / "b" / shards.MANIFEST).read_bytes()
    assert a == b
    manifest = json.loads(a)
    assert build.compare_manifests(manifest, manifest) == []
    changed = json.loads(a)
    changed["splits"]["train"]["code"]["shards"][0]["sha256"] = "0" * 64
    assert build.compare_manifests(manifest, changed) == ["train/code-000.bin"]


def test_batches_from_shards_equal_batches_from_tensors(tmp_path):
    """Same seed, same step: the same rows whether the stream is a tensor or memory-mapped shards."""
    docs = _docs_of_shipped_corpus()
    build.write_corpus(tmp_path, docs, [], Counter(), log=lambda *a: None)
    tensors = {domain: torch.from_numpy(stream.window(0, len(stream)).astype(np.int64))
               for domain, stream in shards.open_split(tmp_path, "train").items()}
    from_tensors = data.TrainBatches(tensors, seq_len=64, batch_size=8, seed=3)
    from_shards = data.TrainBatches(shards.open_joined(tmp_path, "train"), seq_len=64, batch_size=8, seed=3)
    assert from_shards.n_tokens == from_tensors.n_tokens
    for step in (1, 2, 77):
        for rank in (0, 1):
            assert torch.equal(from_shards.batch(step, rank, 2), from_tensors.batch(step, rank, 2))


def test_a_run_trains_on_shards_and_evaluates_on_the_shipped_split(tmp_path):
    build.write_corpus(tmp_path / "tokens", _docs_of_shipped_corpus(), [], Counter(), log=lambda *a: None)
    recipe = tiny_recipe(data={"tokens": str(tmp_path / "tokens")}, train={"max_steps": 4, "eval_every": 2})
    summary = train(recipe, tmp_path / "run", progress=False)
    assert summary["step"] == 4
    assert set(records(tmp_path / "run", "eval")[-1]["val_loss"]) == set(data.DOMAINS)
    # Shards of another tokenizer are refused: their ids would mean other text.
    manifest = json.loads((tmp_path / "tokens" / shards.MANIFEST).read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    shards.write_manifest(tmp_path / "tokens", manifest)
    with pytest.raises(LabError, match="another tokenizer"):
        train(recipe, tmp_path / "run2", progress=False)


RESIDENT = textwrap.dedent("""
    import sys, numpy as np
    from pathlib import Path
    from lab.corpus import shards
    from lab.data import TrainBatches

    def anonymous_kb():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])

    folder = Path(sys.argv[1])
    ids = np.random.default_rng(0).integers(0, 4096, int(sys.argv[2]), dtype=np.uint16)
    entries = shards.write_stream(folder, "train", "english", ids)
    del ids
    before = anonymous_kb()
    batches = TrainBatches(shards.ShardedStream(folder, entries), seq_len=256, batch_size=32, seed=0)
    for step in range(200):
        batches.batch(step)
    print(anonymous_kb() - before)
""")


def test_resident_memory_does_not_grow_with_the_corpus(tmp_path):
    """Batches from 1M and from 40M tokens (80 MB of shards, 320 MB as int64) take the same private memory."""
    grown = []
    for n in (1_000_000, 40_000_000):
        folder = tmp_path / str(n)
        out = subprocess.run([sys.executable, "-c", RESIDENT, str(folder), str(n)], capture_output=True,
                             text=True, check=True)
        grown.append(int(out.stdout.strip()))
    small, big = grown
    assert big < small + 8_000, f"private resident memory grew by {small} kB and {big} kB"


# --- the command -----------------------------------------------------------------------------------


def test_arithmetic_documents_are_correct_and_stable():
    docs = arithmetic_documents(50)
    assert docs[:10] == arithmetic_documents(10)
    for doc in docs:
        for line in doc["text"].split("\n"):
            left, value = line.split(" = ")
            assert eval(left) == int(value)


def test_data_command_refuses_bad_input_with_one_line(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: no manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert "not JSON" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert "not a token-shard manifest" in capsys.readouterr().err
    existing = tmp_path / "out"
    (existing / "x").mkdir(parents=True)
    assert main(["data", "build", "--out", str(existing), "--cache", str(tmp_path / "cache")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "build", "--out", str(tmp_path / "new"), "--check", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing.json" in err and err.count("\n") == 1
    assert not (tmp_path / "new").exists()


def test_the_reference_manifest_describes_a_big_enough_corpus():
    """data/corpus-manifest.json: at least 20M training tokens, every domain present in both splits."""
    manifest = json.loads((data.DATA_DIR / "corpus-manifest.json").read_text())
    assert manifest["format"] == shards.FORMAT and manifest["totals"]["train"] >= 20_000_000
    for split in data.SPLITS:
        assert set(manifest["splits"][split]) == set(data.DOMAINS)
        assert all(entry["tokens"] > 0 for entry in manifest["splits"][split].values())
    tokenizer_sha = hashlib.sha256((data.DATA_DIR / "tokenizer.json").read_bytes()).hexdigest()
    assert manifest["tokenizer"]["sha256"] == tokenizer_sha


def test_a_finished_run_exports_as_a_source_with_a_model_card(tmp_path, monkeypatch):
    import lab.sources as sources

    monkeypatch.setattr(sources, "SOURCE_RUNS_DIR", tmp_path / "runs")
    train(tiny_recipe(train={"max_steps": 3, "eval_every": 3, "sample_tokens": 0}), tmp_path / "run", progress=False)
    assert main(["sources", "export", str(tmp_path / "run"), "--out", str(tmp_path / "src")]) == 0
    card = (tmp_path / "src" / "README.md").read_text()
    assert "M(2, 32)" in card and "| **mean** |" in card
    meta = json.loads((tmp_path / "runs" / "src" / "meta.json").read_text())
    assert set(meta["shipped_validation_loss"]["full"]) == set(data.DOMAINS) | {"mean"}
    import lab

    model = lab.load_pretrained(tmp_path / "src")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert main(["sources", "export", str(tmp_path / "run"), "--out", str(tmp_path / "src")]) == 2  # exists
    assert main(["sources", "export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_a_cached_package_of_another_version_is_fetched_again(tmp_path, monkeypatch):
    """A package cached while the package index was old is not reused: the pinned version may be there now."""
    from lab.corpus import packages

    asked: list[list[str]] = []

    def refuse(command, cwd):
        asked.append(command)
        return subprocess.CompletedProcess(command, 100, "", "E: not found")

    monkeypatch.setattr(packages, "_run", refuse)
    package = packages.PYTHON_DOC
    root = tmp_path / f"{package.name}.root"
    root.mkdir()
    (root / ".version").write_text(package.version)
    assert packages._debian(package, tmp_path) == (root, package.version) and asked == []
    (root / ".version").write_text("3.11.2-6+deb12u8")
    with pytest.raises(LabError, match="run apt-get update"):
        packages._debian(package, tmp_path)
    assert asked[0] == ["apt-get", "download", f"{package.name}={package.version}"]
