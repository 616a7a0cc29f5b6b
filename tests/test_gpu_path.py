"""The GPU path's switches, checked on the CPU: meta-device initialisation, activation checkpointing,
fused AdamW, per-block compilation, the grouped matmul kernel, and the measured matmul peak."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from lab.bench.matmul_peak import measure_matmul_peak
from lab.config import ModelConfig
from lab.distributed import DistInfo
from lab.model import DecoderLM
from lab.moe import grouped_linear
from lab.train import load_recipe
from lab.train.setup import build_model, configure, make_optimizer, materialize, place_model
from train_fixtures import records, tiny_recipe

DENSE = dict(vocab_size=96, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64)
MOE = dict(DENSE, n_experts=4, top_k=2, moe_ffn_dim=32, aux_loss_coef=0.01, z_loss_coef=0.001)


def _ids(cfg: ModelConfig, batch: int = 2, seq: int = 16) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(1))


def _states_equal(a: torch.nn.Module, b: torch.nn.Module, **tol) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        torch.testing.assert_close(sb[name], sa[name], msg=name, **tol)


# ---------------------------------------------------------------------------- meta-device init
@pytest.mark.parametrize("sizes", [DENSE, MOE], ids=["dense", "moe"])
def test_materialize_writes_every_parameter(sizes):
    """A meta-built model, materialised, equals an eager one re-initialised under the same seed."""
    cfg = ModelConfig(**sizes)
    eager = DecoderLM(cfg)
    torch.manual_seed(7)
    eager.init_weights()
    with torch.device("meta"):
        lazy = DecoderLM(cfg)
    assert all(p.is_meta for p in lazy.parameters())
    materialize(lazy, torch.device("cpu"), seed=7)
    assert not any(p.is_meta for p in lazy.parameters())
    _states_equal(eager, lazy, rtol=0, atol=0)
    # and differs under another seed: the comparison can fail
    with torch.device("meta"):
        other = DecoderLM(cfg)
    materialize(other, torch.device("cpu"), seed=8)
    assert not torch.equal(other.tok_embeddings.weight, eager.tok_embeddings.weight)


def test_build_model_meta_init_switch():
    always = load_recipe(tiny_recipe(hardware={"meta_init": "always"}))
    auto = load_recipe(tiny_recipe())
    lazy = build_model(always, always.model, None)
    reference = DecoderLM(always.model)
    torch.manual_seed(always.seed)
    reference.init_weights()
    _states_equal(reference, lazy, rtol=0, atol=0)
    # auto on the CPU: the eager path, as before (manual_seed then the constructor)
    torch.manual_seed(auto.seed)
    _states_equal(DecoderLM(auto.model), build_model(auto, auto.model, None), rtol=0, atol=0)
    # keep_meta leaves it for place_model, which materialises it (one process: no sharding)
    kept = build_model(always, always.model, None, keep_meta=True)
    assert all(p.is_meta for p in kept.parameters())
    placed = place_model(kept, always, DistInfo())
    _states_equal(reference, placed, rtol=0, atol=0)


def test_hardware_switches_are_validated():
    from lab.errors import LabError

    with pytest.raises(LabError, match="meta_init"):
        load_recipe(tiny_recipe(hardware={"meta_init": "sometimes"}))
    with pytest.raises(LabError, match="fused_optimizer"):
        load_recipe(tiny_recipe(hardware={"fused_optimizer": True}))
    # hardware is left out of the digest: a run may resume on other hardware
    assert load_recipe(tiny_recipe(hardware={"compile": True})).digest() == load_recipe(tiny_recipe()).digest()


# ---------------------------------------------------------------------------- activation checkpointing
@pytest.mark.parametrize("sizes", [DENSE, MOE], ids=["dense", "moe"])
def test_activation_checkpointing_same_loss_and_gradients(sizes):
    cfg = ModelConfig(**sizes)
    torch.manual_seed(0)
    plain = DecoderLM(cfg)
    recomputed = DecoderLM(cfg)
    recomputed.load_state_dict(plain.state_dict())
    recomputed.activation_checkpointing = True
    ids = _ids(cfg)
    a, b = plain(ids, labels=ids), recomputed(ids, labels=ids)
    a.loss.backward()
    b.loss.backward()
    torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=0)
    if a.aux_loss is not None:
        torch.testing.assert_close(b.aux_loss, a.aux_loss)
        assert torch.equal(b.tokens_per_expert, a.tokens_per_expert)
    for (name, p), q in zip(plain.named_parameters(), recomputed.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7, msg=name)


def test_activation_checkpointing_recomputes_in_backward():
    """It does recompute: each block's forward starts twice per training step, once without gradients.
    (A pre-hook: the recomputation stops early, once it has what the backward needs.)"""
    cfg = ModelConfig(**DENSE)
    model = DecoderLM(cfg)
    model.activation_checkpointing = True
    calls = []
    model.layers[0].register_forward_pre_hook(lambda *_: calls.append(1))
    ids = _ids(cfg)
    model(ids, labels=ids).loss.backward()
    assert len(calls) == 2
    calls.clear()
    with torch.no_grad():
        model(ids)
    assert len(calls) == 1


def test_configure_sets_activation_checkpointing():
    recipe = load_recipe(tiny_recipe(hardware={"activation_checkpointing": True}))
    model = configure(DecoderLM(recipe.model), recipe)
    assert model.activation_checkpointing


# ---------------------------------------------------------------------------- fused AdamW
def _fused(optimizer) -> bool:
    return bool(optimizer.defaults.get("fused"))


def test_fused_optimizer_only_on_cuda_under_auto():
    model = DecoderLM(ModelConfig(**DENSE))
    assert not _fused(make_optimizer(model, load_recipe(tiny_recipe())))  # auto on the CPU
    assert not _fused(make_optimizer(model, load_recipe(tiny_recipe(hardware={"fused_optimizer": "never"}))))
    from lab.train.recipe import HardwareSpec

    assert HardwareSpec.switch("auto", "cuda") and not HardwareSpec.switch("auto", "cpu")
    assert HardwareSpec.switch("always", "cpu") and not HardwareSpec.switch("never", "cuda")


def test_fused_and_unfused_adamw_take_the_same_steps():
    """fused=always (the CPU has the fused kernel in this torch) equals never, up to rounding.

    Without qkv biases: the key bias's true gradient is zero (softmax ignores a constant per query),
    and Adam divides its rounding noise by a root-mean-square of the same noise."""
    cfg = ModelConfig(**DENSE, qkv_bias=False)
    torch.manual_seed(0)
    models = [DecoderLM(cfg) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = []
    for model, switch in zip(models, ("never", "always")):
        try:
            optimizers.append(make_optimizer(model, load_recipe(tiny_recipe(hardware={"fused_optimizer": switch}))))
        except RuntimeError as e:  # a build without the CPU kernel
            pytest.skip(f"fused AdamW unavailable on the CPU: {e}")
    assert [_fused(o) for o in optimizers] == [False, True]
    ids = _ids(cfg)
    for _ in range(3):
        for model, optimizer in zip(models, optimizers):
            model(ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    start = DecoderLM(cfg)
    assert not torch.equal(start.tok_embeddings.weight, models[0].tok_embeddings.weight)
    # Each step moves a weight by up to lr = 1e-2; the two kernels round differently, and where a
    # gradient is near zero Adam scales that rounding up (1.1e-6 seen on one CPU after 3 steps). 1e-5 is
    # a thousandth of one step: a real difference in the update rule would be a whole step.
    _states_equal(models[0], models[1], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- grouped matmul kernel
@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="this torch has no _grouped_mm")
def test_grouped_mm_and_loop_kernels_agree():
    g = torch.Generator().manual_seed(0)
    counts_list = [5, 0, 11, 3]  # an expert with no tokens included
    counts = torch.tensor(counts_list)
    x = torch.randn(sum(counts_list), 16, generator=g, requires_grad=True)
    w = torch.randn(4, 8, 16, generator=g, requires_grad=True)
    outs, grads = [], []
    for kernel in ("loop", "grouped_mm"):
        y = grouped_linear(x, w, counts, counts_list, kernel=kernel)
        y.pow(2).sum().backward()
        outs.append(y.detach())
        grads.append((x.grad.clone(), w.grad.clone()))
        x.grad = w.grad = None
    expected = torch.cat([c @ w[e].detach().T for e, c in enumerate(torch.split(x.detach(), counts_list))])
    torch.testing.assert_close(outs[0], expected)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- compile
@pytest.mark.slow
def test_compiled_blocks_keep_names_and_numbers():
    recipe = load_recipe(tiny_recipe(hardware={"compile": True}))
    cfg = ModelConfig(**dict(DENSE, n_layers=1))
    torch.manual_seed(0)
    plain = DecoderLM(cfg)
    compiled = DecoderLM(cfg)
    compiled.load_state_dict(plain.state_dict())
    configure(compiled, recipe)
    assert list(compiled.state_dict()) == list(plain.state_dict())  # no _orig_mod. prefix
    ids = _ids(cfg)
    a, b = plain(ids, labels=ids), compiled(ids, labels=ids)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-5)
    a.loss.backward()
    b.loss.backward()
    for p, q in zip(plain.parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- matmul peak
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_measured_matmul_peak_is_a_positive_rate(dtype):
    peak = measure_matmul_peak("cpu", dtype, size=64, iters=2, rounds=1)
    assert math.isfinite(peak) and peak > 0


# ---------------------------------------------------------------------------- FSDP2 + meta init
def _torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *args], capture_output=True, text=True, env=env, timeout=300)


_SHARDED_INIT = """
import sys, torch
from lab import distributed
from lab.train import load_recipe
from lab.train.setup import build_model, place_model
recipe = load_recipe(sys.argv[1])
info = distributed.setup("cpu")
model = place_model(build_model(recipe, recipe.model, None, keep_meta=True), recipe, info)
assert not any(p.is_meta for p in model.parameters())
state = distributed.full_model_state(model, info)
if info.is_main:
    torch.save(state, sys.argv[2])
distributed.teardown(info)
"""


@pytest.mark.slow
def test_sharded_meta_init_equals_unsharded(tmp_path):
    """Built on meta, sharded by FSDP2 over 2 processes, then each materialises its shard: the whole
    model equals the one materialised unsharded from the same seed (no shard repeats another)."""
    recipe = tiny_recipe(hardware={"meta_init": "always"}, model={"n_experts": 4, "top_k": 2, "moe_ffn_dim": 32})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    script = tmp_path / "init.py"
    script.write_text(_SHARDED_INIT)
    done = _torchrun([str(script), str(path), str(tmp_path / "state.pt")])
    assert done.returncode == 0, done.stderr[-3000:]
    sharded = torch.load(tmp_path / "state.pt")
    r = load_recipe(recipe)
    whole = build_model(r, r.model, None)
    assert list(sharded) == list(whole.state_dict())
    for name, t in whole.state_dict().items():
        torch.testing.assert_close(sharded[name], t, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_meta_init_trains_under_two_processes(tmp_path):
    """`lab train` with meta init under torchrun: it trains from a fresh model's loss (about ln vocab)."""
    recipe = tiny_recipe(hardware={"meta_init": "always"}, train={"max_steps": 2, "eval_every": 0, "save_every": 0,
                                                                  "sample_tokens": 0})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    done = _torchrun(["-m", "lab", "train", "--recipe", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    assert done.returncode == 0, done.stderr[-3000:]
    train = records(tmp_path / "run", "train")
    assert [r["step"] for r in train] == [1, 2]
    vocab = load_recipe(recipe).model.vocab_size
    assert abs(train[0]["loss"] - math.log(vocab)) < 0.5
    import lab

    final = lab.load_pretrained(tmp_path / "run" / "final")
    assert all(torch.isfinite(p).all() for p in final.parameters())
