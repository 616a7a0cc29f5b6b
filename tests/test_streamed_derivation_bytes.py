"""Streamed growth and upcycling write the bytes a simple writer writes: every tensor made anew by its
rule, cast, and written after a header, file after file. The streaming writer makes each distinct tensor
once (`lab.checkpoint.memo`), reads the source with plain file reads, writes from the tensors' memory in a
second thread; none of it may change a byte."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import pytest
import torch
from hf_models import tiny_hf_model

from lab.checkpoint import CheckpointSource, read_config
from lab.checkpoint.hf_config import hf_model_type
from lab.checkpoint.io import all_finite, parse_size
from lab.checkpoint.memo import RepeatMemo
from lab.checkpoint.streaming import lab_entries
from lab.derive import grow_checkpoint, growth_rule, upcycle_checkpoint, upcycle_rule
from lab.growth import plan_growth
from lab.upcycle import UpcyclePlan

_CODES = {torch.float32: "F32", torch.bfloat16: "BF16"}

GROWTH = {
    "fpi-interpolate": dict(dim=128, n_heads=8, ffn_dim=192, n_layers=4, depth="interpolate"),
    "identity-noise": dict(dim=128, n_heads=8, n_layers=4, depth="identity", noise=0.3),
    "aki-pro": dict(method="aki-pro", dim=128, n_heads=8, ffn_dim=256, n_layers=3),
    "random-stack": dict(dim=128, n_heads=8, ffn_dim=200, n_layers=5, depth="stack", map="random", seed=3),
}
UPCYCLING = {
    "8e-top2": dict(n_experts=8, top_k=2),
    "G2-scaled": dict(n_experts=16, top_k=4, granularity=2, routing="softmax_topk"),
    "drop-noise": dict(n_experts=8, top_k=4, granularity=2, drop_ratio=0.25, noise=0.01, seed=7),
    "shared": dict(n_experts=6, top_k=2, granularity=4, shared_experts=2),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """A qwen2 source (GQA, q/k/v biases) in fp32 and bf16, and an MHA llama for AKI."""
    root = tmp_path_factory.mktemp("sources")
    made = {}
    for kind, overrides in (("qwen2", {}), ("llama", dict(num_key_value_heads=4))):
        for dtype in (torch.float32, torch.bfloat16):
            path = root / f"{kind}-{str(dtype).removeprefix('torch.')}"
            tiny_hf_model(kind, seed=5, **overrides).to(dtype).save_pretrained(path)
            made[path.name] = path
    return made


def simple_checkpoint_files(source_dir: Path, rule, model_type: str | None, max_shard_size: str) -> dict[str, bytes]:
    """The safetensors files (and index) of the derived checkpoint, written the simple way: each tensor made
    by a rule of its own (nothing kept from one tensor to the next), cast, and its bytes written in order."""
    with CheckpointSource(source_dir) as source:
        target, _ = rule(source.config, source.tensor)
        target = target.replace(dtype=source.config.dtype)
        dtype = getattr(torch, target.dtype)
        model_type = model_type or hf_model_type(target)

        def make(name: str, expert: int | None) -> torch.Tensor:
            return rule(source.config, source.tensor)[1](name, expert).to(dtype).contiguous()

        tensors = [(e.name, e.make()) for e in lab_entries(target, model_type, make, dtype)]
    shards, size = [[]], 0
    for name, t in tensors:
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > parse_size(max_shard_size):
            shards.append([])
            size = 0
        shards[-1].append((name, t))
        size += nbytes
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    files = {}
    for file, shard in zip(names, shards):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, t in shard:
            nbytes = t.numel() * t.element_size()
            header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        files[file] = (struct.pack("<Q", len(raw)) + raw
                       + b"".join(t.reshape(-1).view(torch.uint8).numpy().tobytes() for _, t in shard))
    if len(shards) > 1:
        weight_map = {name: file for file, shard in zip(names, shards) for name, _ in shard}
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for _, t in tensors)},
                 "weight_map": dict(sorted(weight_map.items()))}
        files["model.safetensors.index.json"] = (json.dumps(index, indent=2) + "\n").encode()
    return files


def written_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())
            if p.suffix == ".safetensors" or p.name == "model.safetensors.index.json"}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shard", ["5GB", "40KB"], ids=["one-file", "sharded"])
@pytest.mark.parametrize("name", list(GROWTH))
def test_streamed_growth_writes_the_simple_writers_bytes(sources, tmp_path, name, shard, dtype):
    source = sources[f"{'llama' if name == 'aki-pro' else 'qwen2'}-{dtype}"]
    plan = plan_growth(read_config(source)[0], **GROWTH[name])
    out = grow_checkpoint(source, tmp_path / "grown", plan, max_shard_size=shard)
    expected = simple_checkpoint_files(source, growth_rule(plan), read_config(source)[1], shard)
    assert (shard == "5GB") == (len(expected) == 1)
    assert written_files(out) == expected


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shard", ["5GB", "40KB"], ids=["one-file", "sharded"])
@pytest.mark.parametrize("name", list(UPCYCLING))
def test_streamed_upcycling_writes_the_simple_writers_bytes(sources, tmp_path, name, shard, dtype):
    source = sources[f"qwen2-{dtype}"]
    plan = UpcyclePlan(**UPCYCLING[name])
    out = upcycle_checkpoint(source, tmp_path / "moe", plan, max_shard_size=shard)
    assert written_files(out) == simple_checkpoint_files(source, upcycle_rule(plan), None, shard)


def test_repeated_tensors_are_made_once(sources, tmp_path, monkeypatch):
    """Interpolation places each source layer twice and upcycling cuts 8 equal experts from each MLP: the
    writer makes each distinct tensor once (here the memo's budget holds a whole layer)."""
    from lab.growth import GrowthTensors
    from lab.upcycle import UpcycleTensors

    made = []
    for rule in (GrowthTensors, UpcycleTensors):
        call = rule.__call__
        monkeypatch.setattr(rule, "__call__", lambda self, name, expert=None, call=call: (
            made.append((name, expert)) or call(self, name, expert)))
    source = tmp_path / "wide-vocabulary"  # a large embedding: a budget of two of it holds a grown layer
    tiny_hf_model("qwen2", seed=1, vocab_size=4096).save_pretrained(source)
    cfg = read_config(source)[0]
    grow_checkpoint(source, tmp_path / "grown", plan_growth(cfg, dim=128, n_heads=8, n_layers=4, depth="interpolate"))
    layers = [name for name, _ in made if name.startswith("layers.")]
    assert len(layers) == len(set(layers)) == 2 * 12  # 2 source layers x 12 tensors (2 norms, 7 attention, 3 MLP)
    assert {int(name.split(".")[1]) for name in layers} == {0, 2}  # layers 1 and 3 repeat them

    made.clear()
    upcycle_checkpoint(source, tmp_path / "moe", UpcyclePlan(n_experts=8, top_k=2))
    experts = [(name, e) for name, e in made if e is not None]
    assert sorted(experts) == sorted((f"layers.{l}.mlp.{w}", 0) for l in range(2) for w in ("w_gate", "w_up", "w_down"))


def test_the_memo_keeps_within_its_budget_and_gives_the_same_values():
    """Keys a, b, a, b, c, a: with room for everything, three tensors are made; with room for one, the one
    needed soonest is kept and the rest made again; the values are the same either way."""
    keys = ["a", "b", "a", "b", "c", "a"]
    values = {k: torch.full((4,), float(ord(k))) for k in "abc"}  # 16 bytes each
    for budget, made in ((None, 3), (16, 4), (0, 6)):
        memo = RepeatMemo(keys, budget)
        got = [memo.get(i, lambda k=k: values[k].clone()) for i, k in enumerate(keys)]
        assert [torch.equal(g, values[k]) for g, k in zip(got, keys)] == [True] * len(keys)
        assert memo.made == made, budget


def test_finite_check_finds_any_nan_or_infinity_and_passes_sums_that_overflow():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = (torch.randn(100_003) * 0.02).to(dtype)
        assert all_finite(x)
        for where in (0, 50_000, 100_002):
            for bad in (math.nan, math.inf, -math.inf):
                y = x.clone()
                y[where] = bad
                assert not all_finite(y), (dtype, where, bad)
        assert all_finite(torch.full((1000,), torch.finfo(dtype).max, dtype=dtype))  # the sum overflows: checked again
    assert all_finite(torch.arange(10))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_plain_reads_equal_safetensors_own(tmp_path, dtype):
    from safetensors import safe_open

    tiny_hf_model("llama", seed=3).to(dtype).save_pretrained(tmp_path / "src")
    file = str(tmp_path / "src" / "model.safetensors")
    with CheckpointSource(tmp_path / "src") as source, safe_open(file, "pt") as f:
        for name in source.shapes:
            hf_name = source._maps[name].hf[0]
            assert torch.equal(source.tensor(name), f.get_tensor(hf_name)), name


def test_the_writer_writes_safetensors_own_bytes(tmp_path):
    """Given tensors in the order `save_file` puts them (by name, for one dtype), the file is its file, whatever
    order the tensors are made and written in."""
    from safetensors.torch import save_file

    from lab.checkpoint.safetensors_stream import TensorEntry, making_order, write_safetensors

    tensors = {"a": torch.randn(3, 5), "b.weight": torch.randn(300_000), "c": torch.zeros(0, 4), "d": torch.randn(7)}
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"format": "pt"})
    made = []
    entries = [TensorEntry(k, tuple(t.shape), t.dtype, lambda k=k, t=t: made.append(k) or t) for k, t in tensors.items()]
    theirs = (tmp_path / "theirs.safetensors").read_bytes()
    for order in (None, making_order(entries), [3, 1, 0, 2]):  # the header's, smallest first, any other
        made.clear()
        write_safetensors(tmp_path / "ours.safetensors", entries, order=order)
        assert made == [entries[i].name for i in (order or range(4))]
        assert (tmp_path / "ours.safetensors").read_bytes() == theirs, order
    assert making_order(entries) == [2, 3, 0, 1]  # 0, 28, 60 and 1.2 MB
    with pytest.raises(ValueError, match="not a permutation"):
        write_safetensors(tmp_path / "bad.safetensors", entries, order=[0, 1, 1, 2])


def test_reads_are_cpu_tensors_under_any_default_device(tmp_path):
    tiny_hf_model("llama", seed=3).save_pretrained(tmp_path / "src")
    with torch.device("meta"), CheckpointSource(tmp_path / "src") as source:
        assert source.tensor("norm.weight").device.type == "cpu"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, whose every write fails with ENOSPC")
def test_a_failed_write_is_raised_in_the_callers_thread():
    from lab.checkpoint.safetensors_stream import WriteBehind

    with open("/dev/full", "wb", buffering=0) as full:  # every write: ENOSPC
        with pytest.raises(OSError, match="No space left"):
            with WriteBehind(full) as writer:
                for i in range(3):
                    writer.write(memoryview(b"x" * 10), 10 * i)


def test_the_writers_queue_holds_at_most_its_bytes_or_one_buffer(tmp_path, monkeypatch):
    """The caller blocks while the queue (the buffer being written included) would pass `queued_bytes`, and
    not before: small buffers queue up. A buffer larger than the bound still goes through, alone. The file
    gets every buffer at its offset."""
    import threading
    import time

    import lab.checkpoint.safetensors_stream as stream

    seen = []  # bytes queued whenever a write starts
    released = threading.Event()
    write_all = stream.write_all

    def held_write_all(f, data, offset):
        seen.append(writer._queued)
        released.wait(timeout=5)  # the first write holds the writer until the caller has queued its buffers
        write_all(f, data, offset)

    monkeypatch.setattr(stream, "write_all", held_write_all)
    sizes = [10, 10, 10, 10, 50, 10, 10]
    with open(tmp_path / "out", "wb", buffering=0) as f:
        with stream.WriteBehind(f, queued_bytes=30) as writer:
            start = time.perf_counter()
            for i, n in enumerate(sizes[:3]):  # 30 bytes: within the bound, so no wait
                writer.write(memoryview(bytes([i]) * n), 10 * i)
            assert time.perf_counter() - start < 2.5
            released.set()
            for i, n in enumerate(sizes[3:], start=3):
                writer.write(memoryview(bytes([i]) * n), sum(sizes[:i]))
    assert max(seen) == 50 and all(q <= 30 for q in seen if q != 50)
    assert (tmp_path / "out").read_bytes() == b"".join(bytes([i]) * n for i, n in enumerate(sizes))


@pytest.mark.parametrize("shard", ["5GB", "40KB"], ids=["one-file", "sharded"])
def test_the_writer_makes_tensors_in_the_order_making_sequence_gives(tmp_path, shard):
    """Processes that take part in the gathers of a sharded export but write nothing follow
    `making_sequence` (lab.train.sharded_checkpoint): it must be the writer's own order, file after file."""
    from lab.checkpoint.io import making_sequence, write_checkpoint
    from lab.checkpoint.safetensors_stream import TensorEntry

    sizes = {"a": 3000, "b": 10, "c": 7000, "d": 10, "e": 5000, "f": 1}
    made = []
    entries = [TensorEntry(k, (n,), torch.float32, lambda k=k, n=n: made.append(k) or torch.zeros(n))
               for k, n in sizes.items()]
    write_checkpoint(tmp_path / "out", {}, entries, max_shard_size=shard)
    assert made == [e.name for e in making_sequence(entries, shard)]
    assert sorted(made) == sorted(sizes) and made != list(sizes)  # each once, smallest first within a file
