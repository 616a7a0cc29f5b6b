"""`python -m lab grow`: what it prints, what it writes, and one line for each user mistake."""

from __future__ import annotations

import json

import pytest
from hf_models import tiny_hf_model

from lab.cli import main


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    tiny_hf_model("qwen2", seed=2).save_pretrained(root / "gqa")  # 4 heads, 2 kv groups, dim 64, ffn 96
    tiny_hf_model("llama", seed=2, num_key_value_heads=4, tie_word_embeddings=True).save_pretrained(root / "tied")
    tiny_hf_model("mixtral", seed=2).save_pretrained(root / "moe")
    return root


def test_grow_prints_what_it_did_and_verifies(sources, tmp_path, capsys):
    out = tmp_path / "big"
    assert main(["grow", str(sources / "gqa"), str(out), "--hidden-size", "128", "--num-heads", "8",
                 "--intermediate-size", "192", "--num-layers", "3", "--depth", "identity", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "(qwen2, 2 layers, dim 64, 4 heads / 2 kv, head_dim 16, ffn_dim 96)" in printed
    assert "target: 3 layers, dim 128, 8 heads / 2 kv, head_dim 16, ffn_dim 192" in printed
    assert "method fpi, depth identity, placement first (source layers 0,0,1)" in printed
    assert "function-preserving: yes; writes qwen2" in printed
    gap = float(printed.split("max |logit gap| ")[1].split(",")[0])
    assert gap < 1e-5
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"


def test_aki_pro_defaults_to_interpolation_and_tied_source_warns(sources, tmp_path, capsys):
    assert main(["grow", str(sources / "gqa"), str(tmp_path / "a"), "--method", "aki-pro", "--hidden-size", "128",
                 "--num-heads", "8", "--num-layers", "4"]) == 0
    assert "method aki-pro, depth interpolate (source layers 0,0,1,1)" in capsys.readouterr().out
    assert main(["grow", str(sources / "tied"), str(tmp_path / "b"), "--method", "aki", "--hidden-size", "128",
                 "--num-heads", "8"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("warning: the source ties its embeddings") and "writes llama" in printed
    assert not json.loads((tmp_path / "b" / "config.json").read_text())["tie_word_embeddings"]


def test_force_replaces_the_output(sources, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert main(["grow", str(sources / "gqa"), str(out), "--intermediate-size", "128", "--force"]) == 0
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("args, message", [
    (["--hidden-size", "32", "--num-heads", "2"], "--hidden-size 32 is smaller than the source's 64"),
    (["--num-layers", "1"], "--num-layers 1 is smaller than the source's 2"),
    (["--hidden-size", "128"], "--hidden-size 128 is not --num-heads 4 x head_dim 16 = 64 (head_dim is kept; "
                               "give --num-heads 8)"),
    (["--hidden-size", "96", "--num-heads", "6", "--num-kv-heads", "4"],
     "--num-heads 6 is not divisible by --num-kv-heads 4"),
    (["--hidden-size", "128", "--num-heads", "8", "--num-kv-heads", "4"], "changes the source's 2 kv groups"),
    (["--hidden-size", "80", "--num-heads", "5"], "--num-heads 5 is not divisible by the 2 kv heads"),
    (["--method", "aki", "--hidden-size", "128", "--num-heads", "8"], "use --method aki-pro"),
    (["MOE"], "the source is a Mixture of Experts"),
    (["EXISTS"], "already exists"),
    (["MISSING"], "not a directory"),
])
def test_user_mistakes_give_one_line_and_write_nothing(sources, tmp_path, capsys, args, message):
    src, out = sources / "gqa", tmp_path / "out"
    if args[0] == "MOE":
        src, args = sources / "moe", args[1:]
    elif args[0] == "EXISTS":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        args = args[1:]
    elif args[0] == "MISSING":
        src, args = tmp_path / "nowhere", args[1:]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["grow", str(src), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing half-written
