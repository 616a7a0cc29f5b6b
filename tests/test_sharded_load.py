"""Sharded loading (lab.train.setup.load_shards): each process reads its piece of every parameter in place,
and `python -m lab bench sharded-load` measures each process's peak memory while a stage loads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import lab
from lab.bench import sharded_load, suite
from lab.checkpoint import CheckpointSource
from lab.checkpoint.io import SafetensorsReader
from lab.cli import main
from lab.config import ModelConfig
from lab.model import DecoderLM

MIB = 2**20


def clear_refs_works() -> bool:
    return sharded_load._reset_peak()


def in_a_fresh_process(body: str) -> dict:
    """Run a memory measurement in a new interpreter and return its `result` dict. Inside a test process that
    earlier tests have grown (an xdist worker at 1.7 GB in CI), a 64 MiB allocation raised no new peak: memory
    those tests freed and the allocator kept can serve it."""
    code = "import json, torch\nfrom lab.bench import sharded_load\n" + textwrap.dedent(body) + \
        "\nprint(json.dumps(result))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def write(tmp_path, dtype: str, n_experts: int = 0, **sizes):
    cfg = ModelConfig(**{**dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48), **sizes},
                      n_experts=n_experts, dtype=dtype)
    torch.manual_seed(0)
    model = DecoderLM(cfg).to(getattr(torch, dtype))
    path = tmp_path / f"{dtype}-{n_experts}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.save_pretrained(model, path)
    return path


def boxes(shape):
    """Whole rows, the second half, none at all, and (for a matrix) an inner block of rows and columns."""
    whole = [slice(0, n) for n in shape]
    half = (shape[0] + 1) // 2
    out = [tuple(whole), (slice(half, shape[0]), *whole[1:]), (slice(0, 0), *whole[1:])]
    if len(shape) > 1:
        out.append((slice(1, shape[0]), slice(1, shape[1] - 1), *whole[2:]))
    return out


@pytest.mark.parametrize("n_experts", [0, 4])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_read_into_equals_the_box_of_the_whole_tensor(tmp_path, dtype, n_experts):
    """Any box of any parameter (a stacked expert weight's rows are experts), into fp32 or the stored dtype,
    read in place or in chunks of a few bytes: the same values as slicing the whole tensor read at once."""
    with CheckpointSource(write(tmp_path, dtype, n_experts)) as src:
        for name, shape in src.shapes.items():
            whole = src.tensor(name)
            for box in boxes(shape):
                for out_dtype in (torch.float32, whole.dtype):
                    out = torch.full(whole[box].shape, float("nan"), dtype=out_dtype)
                    assert src.read_into(name, out, box) is out
                    torch.testing.assert_close(out, whole[box].to(out_dtype), rtol=0, atol=0, msg=f"{name} {box}")
            if not src._lookup(name)[0].stacked:
                out = torch.empty(shape)
                src._reader.read_box_into(src._lookup(name)[0].hf[0], shape, out, boxes(shape)[0], chunk_bytes=7)
                torch.testing.assert_close(out, whole.float(), rtol=0, atol=0, msg=f"{name} in 7-byte chunks")


def test_read_into_refuses_a_box_that_does_not_fit(tmp_path):
    with CheckpointSource(write(tmp_path, "float32")) as src:
        with pytest.raises(ValueError, match="does not match"):
            src.read_into("tok_embeddings.weight", torch.empty(3, 32), (slice(0, 4), slice(0, 32)))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_read_into_holds_at_most_one_chunk(tmp_path, dtype, monkeypatch):
    """The invariant that bounds a process's memory to its shard: a piece stored in the parameter's dtype is
    read straight into it (no buffer); another dtype goes through one chunk of at most `chunk_bytes` at a time."""
    reads = []
    original = SafetensorsReader._read

    def counted(self, key, shape, dtype_, start, stop):
        tensor = original(self, key, shape, dtype_, start, stop)
        reads.append(tensor.nbytes)
        return tensor

    monkeypatch.setattr(SafetensorsReader, "_read", counted)
    path = write(tmp_path, dtype, vocab_size=4096, dim=64)
    with CheckpointSource(path) as src:
        out = torch.empty(src.shapes["tok_embeddings.weight"])
        src._reader.read_box_into("model.embed_tokens.weight", tuple(out.shape), out, boxes(out.shape)[0],
                                  chunk_bytes=64 * 2**10)
    if dtype == "float32":
        assert reads == []
    else:
        assert len(reads) > 1 and max(reads) <= 64 * 2**10


def test_loading_a_meta_model_peaks_near_its_own_size(tmp_path):
    """load_shards into a model on meta (one process: every parameter is its own whole piece) allocates the
    model and at most a read chunk more. Reading each tensor whole first, as before, peaked at the model plus
    its largest tensor (the embedding here, ~40% of it) or, from bf16, one and a half times that."""
    if not clear_refs_works():
        pytest.skip("VmHWM cannot be reset here (/proc/self/clear_refs)")
    path = write(tmp_path, "bfloat16", vocab_size=16384, dim=512, n_heads=8, ffn_dim=512)
    measured = in_a_fresh_process(f"""
        from lab.config import ModelConfig
        from lab.model import DecoderLM
        from lab.train.setup import load_shards
        with torch.device("meta"):
            model = DecoderLM(ModelConfig(vocab_size=16384, dim=512, n_layers=2, n_heads=8, n_kv_heads=2,
                                          ffn_dim=512))
        baseline = sharded_load._status("VmRSS")
        sharded_load._reset_peak()
        load_shards(model, {str(path)!r}, torch.device("cpu"))
        peak = sharded_load._status("VmHWM") - baseline
        torch.save(model.layers[1].attn.o_proj.weight.detach().clone(), {str(tmp_path / "o_proj.pt")!r})
        result = dict(peak=peak, model_bytes=model.num_parameters() * 4,
                      largest=max(p.numel() for p in model.parameters()) * 4)
    """)
    peak, model_bytes, largest = measured["peak"], measured["model_bytes"], measured["largest"]
    assert largest > 0.35 * model_bytes
    # The model, a 4 MiB chunk and slack: at most 91 MiB here (77-81 measured), against 111 (fp32) and 121 MiB
    # (bf16) when each tensor was read whole first.
    assert peak <= model_bytes + largest / 2, (peak / MIB, model_bytes / MIB, largest / MIB)
    with CheckpointSource(path) as src:
        expected = src.tensor("layers.1.attn.o_proj.weight").float()
    torch.testing.assert_close(torch.load(tmp_path / "o_proj.pt"), expected, rtol=0, atol=0)


def test_the_peak_reset_sees_a_transient_allocation():
    """The benchmark's measurement: after the reset, VmHWM keeps a peak that is gone again; the sampler (the
    fallback where the reset is refused) sees it too."""
    if not clear_refs_works():
        pytest.skip("VmHWM cannot be reset here (/proc/self/clear_refs)")
    measured = in_a_fresh_process("""
        import time
        baseline = sharded_load._status("VmRSS")
        sharded_load._reset_peak()
        transient = torch.ones(16 * 2**20)  # 64 MiB, written, then freed
        del transient
        reset_peak = sharded_load._status("VmHWM") - baseline
        baseline = sharded_load._status("VmRSS")
        with sharded_load._Sampler() as sampler:
            transient = torch.ones(16 * 2**20)
            time.sleep(0.05)
            del transient
        result = dict(reset_peak=reset_peak, sampled_peak=sampler.peak - baseline)
    """)
    assert measured["reset_peak"] >= 60 * MIB
    assert measured["sampled_peak"] >= 60 * MIB


@pytest.mark.slow
def test_the_benchmark_reports_the_figures_its_processes_measured(tmp_path, capsys):
    """`bench sharded-load --quick`: two torchrun processes load a toy checkpoint through lab.train.setup;
    each ratio is that process's measured peak over the model's fp32 bytes (no figure is asserted: a toy
    model's peak is the fixed cost of sharding, not the model)."""
    path = tmp_path / "r.json"
    assert main(["bench", "sharded-load", "--quick", "--json", str(path), "--workdir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["quick"] and report["nproc"] == 2 and report["checkpoint_dtype"] == "float32"
    assert report["model_fp32_bytes"] == 4 * report["parameters"] > 0
    ranks = report["processes"]
    assert [p["rank"] for p in ranks] == [0, 1] and all(p["world_size"] == 2 for p in ranks)
    # Each process holds half of every parameter's rows: together, the whole model.
    assert sum(p["shard_bytes"] for p in ranks) == report["model_fp32_bytes"]
    for p in ranks:
        assert p["method"] in ("VmHWM after clear_refs", "VmRSS sampled every 1 ms")
        assert p["baseline_rss"] > 0 and p["peak_rss"] == p["baseline_rss"] + p["peak_above_baseline"]
        assert p["kept_above_baseline"] <= p["peak_above_baseline"]
        assert p["ratio"] == pytest.approx(p["peak_above_baseline"] / report["model_fp32_bytes"])
        assert p["floor_bytes"] == p["shard_bytes"] + p["largest_tensor_bytes"]
        assert p["largest_tensor_bytes"] == 4 * report["model"]["vocab_size"] * report["model"]["dim"]
        assert p["embedding_piece_shape"] == [report["model"]["vocab_size"] // 2, report["model"]["dim"]]
        assert f"rank {p['rank']}: idle baseline" in printed
    assert report["max_ratio"] == max(p["ratio"] for p in ranks)
    md = suite.markdown({"machine": suite.machine(), "threads": 1, "quick": True, "sharded_load": report})
    assert "**Sharded loading under FSDP2**" in md and "| 1 | " in md
