"""lab.fast_linear: fp32 linear layers through oneDNN compute F.linear's products (to fp32 rounding),
forward and backward, and fall back to F.linear itself wherever the fast path does not apply."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from lab import fast_linear

ONEDNN = pytest.mark.skipif(fast_linear._OP is None, reason="this PyTorch has no oneDNN")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the size gates scale with the thread count, and the sizes below are chosen
    for one (and two) threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_rounding_close(a: torch.Tensor, r: torch.Tensor) -> None:
    """a equals r up to fp32 rounding of sums of a few hundred terms in another order: every element
    within 1e-5 of r's largest magnitude (a wrong product is off by as much as the values themselves)."""
    assert a.shape == r.shape and a.dtype == r.dtype
    assert (a - r).abs().max() <= 1e-5 * r.abs().max(), (a - r).abs().max() / r.abs().max()


def _grads(fn, *tensors, grad):
    for t in tensors:
        t.grad = None
    y = fn()
    y.backward(grad)
    return [y.detach()] + [t.grad for t in tensors]


@ONEDNN
@pytest.mark.parametrize("shape", [(512, 256), (2, 300, 256)])  # rows x in, and a batch of sequences
@pytest.mark.parametrize("bias", [False, True])
def test_linear_equals_f_linear_forward_and_backward(shape, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).requires_grad_()
    w = (torch.randn(384, 256, generator=g) / 16).requires_grad_()
    b = torch.randn(384, generator=g).requires_grad_() if bias else None
    grad = torch.randn(*shape[:-1], 384, generator=g)
    assert fast_linear.uses_onednn(x, w)
    params = [x, w] + ([b] if bias else [])
    ours = _grads(lambda: fast_linear.linear(x, w, b), *params, grad=grad)
    reference = _grads(lambda: F.linear(x, w, b), *params, grad=grad)
    for a, r in zip(ours, reference):
        assert a.is_contiguous()
        assert_rounding_close(a, r)


@ONEDNN
@pytest.mark.parametrize("out_features", [128, 4096])  # dW computed directly, and as (x^T dy)^T for a wide output
def test_weight_gradient_both_orders(out_features):
    g = torch.Generator().manual_seed(1)
    x, dy = torch.randn(1024, 256, generator=g), torch.randn(1024, out_features, generator=g)
    assert_rounding_close(fast_linear.weight_grad(x, dy), dy.T @ x)


@ONEDNN
def test_grouped_linear_equals_a_loop_of_f_linear():
    g = torch.Generator().manual_seed(2)
    sizes = [300, 0, 500, 224]  # an expert without rows, too
    x = torch.randn(sum(sizes), 256, generator=g).requires_grad_()
    w = (torch.randn(4, 512, 256, generator=g) / 16).requires_grad_()
    grad = torch.randn(sum(sizes), 512, generator=g)
    ours = _grads(lambda: fast_linear.grouped_linear(x, w, sizes), x, w, grad=grad)
    loop = _grads(lambda: torch.cat([F.linear(x_e, w[e]) for e, x_e in enumerate(x.split(sizes))]), x, w, grad=grad)
    for a, r in zip(ours, loop):
        assert_rounding_close(a, r)
    assert torch.equal(ours[2][1], torch.zeros(512, 256))  # the empty expert's gradient


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # mkldnn.flags() sets every flag, TF32's too
@pytest.mark.parametrize("why", ["turned off", "oneDNN off", "no oneDNN", "float64", "small", "autocast", "1-D"])
def test_falls_back_to_f_linear_bit_for_bit(why, monkeypatch):
    dtype = torch.float64 if why == "float64" else torch.float32
    rows = 4 if why == "small" else 512
    x = torch.randn(256, dtype=dtype) if why == "1-D" else torch.randn(rows, 256, dtype=dtype)
    w = torch.randn(384, 256, dtype=dtype)
    if why == "no oneDNN":
        monkeypatch.setattr(fast_linear, "_OP", None)
    context = {"turned off": lambda: fast_linear.enabled(False),
               "oneDNN off": lambda: torch.backends.mkldnn.flags(enabled=False),
               "autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}.get(why, contextlib.nullcontext)
    with context():
        assert not fast_linear.uses_onednn(x, w)
        y = fast_linear.linear(x, w)
        assert torch.equal(y, F.linear(x, w))
    assert y.dtype == (torch.bfloat16 if why == "autocast" else dtype)


def test_linear_module_keeps_nn_linear_names_and_shapes():
    ours, plain = fast_linear.Linear(256, 384, bias=True), torch.nn.Linear(256, 384, bias=True)
    assert isinstance(ours, torch.nn.Linear)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(512, 256)
    assert_rounding_close(ours(x), plain(x))


@ONEDNN
def test_no_operand_runs_in_onednns_reference_kernel(capfd):
    """oneDNN runs operands of other strides than row-major or its transpose in a reference kernel,
    hundreds of times slower: a slice of wider rows and a broadcast weight are copied first."""
    wide = torch.randn(384, 512)
    x = torch.randn(512, 256).requires_grad_()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        fast_linear.mm_bt(x.detach(), wide[:, :256])
        fast_linear.mm_bt(x.detach(), torch.randn(1, 256).expand(384, 256))
        fast_linear.linear(x, wide[:, :256]).sum().backward()  # a broadcast gradient
    lines = [line for line in capfd.readouterr().out.splitlines() if "primitive,exec" in line]
    assert lines and not [line for line in lines if ",ref" in line], lines


def test_gates_scale_with_the_threads():
    x, w = torch.randn(512, 128), torch.randn(128, 128)  # 2^23 multiply-adds
    assert fast_linear.uses_onednn(x, w) == (fast_linear._OP is not None)
    torch.set_num_threads(4)  # restored by the fixture: 2^22 per thread needs 2^24
    assert not fast_linear.uses_onednn(x, w)
    assert not fast_linear.grouped_uses_onednn(torch.randn(2048, 128), torch.randn(8, 176, 128))


def test_the_lm_head_keeps_f_linear_below_its_own_gate():
    """The LM head's gate (2^25 per thread) is above the other linears' (2^22): the golden losses' LM head
    (128 tokens x 32 x 4096 = 2^24 on one thread) stays on F.linear, bit for bit, where a projection of
    that size would take oneDNN; the model benchmark's (2048 x 256 x 4096 on two threads) does not."""
    torch.set_num_threads(1)  # restored by the fixture
    x, w = torch.randn(4, 32, 32), torch.randn(4096, 32)
    assert fast_linear.uses_onednn(x, w) == (fast_linear._OP is not None)
    assert not fast_linear.uses_onednn(x, w, fast_linear.LM_HEAD_MIN_MACS_PER_THREAD)
    torch.testing.assert_close(fast_linear.linear(x, w, min_macs_per_thread=fast_linear.LM_HEAD_MIN_MACS_PER_THREAD),
                               F.linear(x, w), rtol=0, atol=0)
    torch.set_num_threads(2)
    big = torch.randn(1, 2048, 256)
    assert fast_linear.uses_onednn(big, torch.randn(4096, 256), fast_linear.LM_HEAD_MIN_MACS_PER_THREAD) == (
        fast_linear._OP is not None)


def test_bucketed_pads_each_group_to_the_bucket():
    sizes = [3, 0, 33, 32, 1]
    padded, positions = fast_linear.bucketed(sizes)
    b = fast_linear.ROW_BUCKET
    assert padded == [b, 0, 2 * b, b, b]
    starts = [0, b, b, 3 * b, 4 * b]
    expected = [start + i for start, n in zip(starts, sizes) for i in range(n)]
    assert positions.tolist() == expected


@ONEDNN
def test_bucketed_experts_equal_the_grouped_matmul_forward_and_backward(monkeypatch):
    """The MoE's experts on zero-padded groups through oneDNN: the rows' outputs and all gradients equal
    those of the unpadded grouped matmul to rounding; the expert without rows gets a zero gradient."""
    from lab import moe

    monkeypatch.setattr(fast_linear, "MIN_GROUP_MACS_PER_THREAD", 1)
    g = torch.Generator().manual_seed(3)
    E, D, Fd = 4, 64, 96
    counts = torch.tensor([37, 0, 100, 63])
    x = torch.randn(int(counts.sum()), D, generator=g).requires_grad_()
    ws = [(torch.randn(E, Fd, D, generator=g) / 8).requires_grad_(), (torch.randn(E, Fd, D, generator=g) / 8).requires_grad_(),
          (torch.randn(E, D, Fd, generator=g) / 10).requires_grad_()]
    grad = torch.randn(x.shape[0], D, generator=g)
    calls = []
    monkeypatch.setattr(moe, "_bucketed_expert_mlps", lambda *a, _f=moe._bucketed_expert_mlps: calls.append(1) or _f(*a))
    ours = _grads(lambda: moe.expert_mlps(x, counts, *ws), x, *ws, grad=grad)
    with fast_linear.enabled(False):
        reference = _grads(lambda: moe.expert_mlps(x, counts, *ws, kernel="loop"), x, *ws, grad=grad)
    assert calls
    for a, r in zip(ours, reference):
        assert_rounding_close(a, r)
    assert all(torch.equal(grad_w[1], torch.zeros_like(grad_w[1])) for grad_w in ours[2:])
