"""The Table 1 script, without training: six initialisations of a bigger model, evaluated on real text."""

from __future__ import annotations

import pytest
import torch

import lab
from lab.data import DATA_DIR
from lab.experiments.growth_table1 import format_table, run


@pytest.mark.parametrize("kv", [2, 4])
def test_table1_rows_and_the_exact_one(tmp_path, kv):
    torch.manual_seed(0)
    cfg = lab.ModelConfig(vocab_size=4096, dim=32, n_layers=2, n_heads=2, n_kv_heads=kv // 2, ffn_dim=64)
    lab.save_pretrained(lab.DecoderLM(cfg), tmp_path / "src", tokenizer_dir=DATA_DIR)
    rows = run(tmp_path / "work", source=tmp_path / "src", steps=0, seq_len=64, report=lambda _: None)
    losses = {r.key: r.loss_grown for r in rows}
    assert list(losses) == ["source", "fpi-width", "fpi-stack", "fpi-interpolate", "aki-stack", "aki-pro", "random"]
    torch.testing.assert_close(losses["fpi-width"], losses["source"], atol=1e-4, rtol=0)  # width-only FPI is exact
    assert rows[3].shape == "M(3, 64)" and all(l == l for l in losses.values())
    assert rows[4].label == ("AKI + stacking" if kv == 4 else "AKI (GQA rule) + stacking")
    table = format_table(rows, 0)
    assert table.count("\n") == 8 and "| FPI, width only | M(2, 64) |" in table
