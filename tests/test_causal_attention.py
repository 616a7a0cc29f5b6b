"""lab.causal_attention equals SDPA's causal attention to fp32 rounding, forward and backward, and the
model with every CPU fast path at work (lab.fast_linear, lab.causal_attention) equals transformers'."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hf_models import tiny_hf_model
from test_fast_linear import ONEDNN, assert_rounding_close

import lab
from lab import causal_attention, fast_linear


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, where the blocked attention runs (and the tests' timings do not depend on
    the machine's cores); restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _qkv(B, H, K, T, hd, seed=0):
    """q, k, v as the model makes them: projections viewed (B, T, heads, hd) and transposed (not row-major)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, n, hd, generator=g).transpose(1, 2).requires_grad_() for n in (H, K, K))
    return q, k, v, torch.randn(B, H, T, hd, generator=g)


def _forward_backward(fn, q, k, v, grad):
    for t in (q, k, v):
        t.grad = None
    y = fn(q, k, v)
    y.backward(grad)
    return [y.detach(), q.grad, k.grad, v.grad]


@ONEDNN
@pytest.mark.parametrize("B, H, K, T, hd", [(1, 4, 2, 1024, 64),  # grouped-query, as the benchmark
                                            (2, 4, 4, 600, 64),  # heads of their own; a last block of 88
                                            (1, 6, 2, 520, 48)])  # head size 48: a scale that is not exact
def test_equals_sdpa_forward_and_backward(B, H, K, T, hd):
    q, k, v, grad = _qkv(B, H, K, T, hd)
    assert causal_attention.applies(q, k, v)
    ours = _forward_backward(causal_attention.causal_attention, q, k, v, grad)
    sdpa = _forward_backward(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                           enable_gqa=True), q, k, v, grad)
    for a, r in zip(ours, sdpa):
        assert_rounding_close(a, r)


def test_applies_only_where_it_is_faster_and_fits():
    q, k, v, _ = _qkv(1, 4, 2, causal_attention.MIN_TOKENS, 64)
    assert causal_attention.applies(q, k, v) == (fast_linear._OP is not None)
    short = _qkv(1, 4, 2, causal_attention.MIN_TOKENS - 1, 64)[:3]
    assert not causal_attention.applies(*short)
    assert not causal_attention.applies(*(t.detach().double() for t in (q, k, v)))
    with fast_linear.enabled(False):
        assert not causal_attention.applies(q, k, v)
    torch.set_num_threads(causal_attention.MAX_THREADS + 1)  # restored by the fixture
    assert not causal_attention.applies(q, k, v)


@ONEDNN
def test_keeps_flash_attentions_memory_where_the_probabilities_would_be_large(monkeypatch):
    q, k, v, _ = _qkv(1, 4, 2, 1024, 64)
    monkeypatch.setattr(causal_attention, "MAX_SAVED", 4 * 1024 * 1024 // 2)  # under the 4 x 1024 x 1152 / 2 kept
    assert not causal_attention.applies(q, k, v)
    with torch.no_grad():  # nothing is kept without a backward pass
        assert causal_attention.applies(q, k, v)


# Sizes at which every fast path runs: 512 tokens (causal_attention.MIN_TOKENS), products of 2^25 multiply-adds
# and more (fast_linear.MIN_MACS_PER_THREAD is 2^22), experts of 256 rows on average (2^24 multiply-adds).
LONG = dict(hidden_size=256, intermediate_size=512, moe_intermediate_size=256, shared_expert_intermediate_size=256,
            max_position_embeddings=1024)


@ONEDNN
@pytest.mark.parametrize("threads", [1, causal_attention.MAX_THREADS + 1])  # with the blocked attention, without
@pytest.mark.parametrize("kind", ["llama", "qwen2", "mixtral", "qwen2_moe"])
def test_the_model_on_its_fast_paths_equals_transformers(kind, threads, tmp_path, monkeypatch):
    """Parity with transformers at a length and width where the CPU fast paths run, to fp32 rounding.

    On its default paths (MKL, flash attention) the model equals transformers' bit for bit here; with the
    fast paths its logits move by about 3e-6 of their largest value (transformers' eager attention is
    about 1.5e-6 from its SDPA at these sizes), within the 1e-5 of `assert_rounding_close` (the tiny
    models of tests/test_hf_parity.py, below the fast paths' sizes, keep their tighter tolerance).
    Training's gradients equal those of the model with the fast paths turned off, to the same rounding."""
    overrides = {k: v for k, v in LONG.items() if "moe" in kind or "expert" not in k}
    torch.set_num_threads(threads)  # restored by the fixture
    hf = tiny_hf_model(kind, **overrides)
    hf.save_pretrained(tmp_path / "hf")
    ours = lab.load_pretrained(tmp_path / "hf")
    ids = torch.randint(0, 96, (1, 512), generator=torch.Generator().manual_seed(1))
    calls = {"causal_attention": 0, "mm_bt": 0}  # the blocked attention, and every oneDNN product
    for module, name in ((causal_attention, "causal_attention"), (fast_linear, "mm_bt")):
        def counted(*args, _original=getattr(module, name), _name=name):
            calls[_name] += 1
            return _original(*args)
        monkeypatch.setattr(module, name, counted)
    with torch.no_grad():
        assert_rounding_close(ours(ids).logits, hf(ids).logits)
        assert_rounding_close(ours(ids, labels=ids).lm_loss, hf(ids, labels=ids).loss)
    assert calls["mm_bt"] and bool(calls["causal_attention"]) == (threads <= causal_attention.MAX_THREADS), calls

    ours.train()
    ours(ids, labels=ids).loss.backward()
    fast = {name: p.grad.clone() for name, p in ours.named_parameters()}
    ours.zero_grad(set_to_none=True)
    with fast_linear.enabled(False):
        ours(ids, labels=ids).loss.backward()
    for name, p in ours.named_parameters():
        assert_rounding_close(fast[name], p.grad)
