"""What would cap MFU on a GPU, checked on the CPU: reads of device values on the host (each one waits for
every kernel queued before it), graph breaks inside a compiled block, and the MoE under bf16 autocast on
fp32 master weights (one GPU's training setting)."""

from __future__ import annotations

import pytest
import torch

from lab.config import ModelConfig
from lab.model import DecoderLM, rope_inv_freq, rope_tables
from lab.moe import MoE, expert_counts, expert_kernel, grouped_experts, grouped_linear, reference_experts, route
from lab.train.setup import adamw
from lab.train.step import train_step

MOE = dict(vocab_size=96, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=64,
           n_experts=4, top_k=2, moe_ffn_dim=32)
HAS_GROUPED_MM = pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="this torch has no _grouped_mm")


def _forbid_host_reads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a device value was read on the host")

    for name in ("tolist", "item"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@HAS_GROUPED_MM
def test_grouped_dispatch_reads_nothing_on_the_host(monkeypatch):
    """The MoE forward and backward on the grouped matmul path never call .tolist() or .item()."""
    torch.manual_seed(0)
    layer = MoE(ModelConfig(**MOE))
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 16, 32, requires_grad=True)
    assert expert_kernel(x.view(-1, 32), layer.w_gate) == "grouped_mm"  # fp32 rows of 128 bytes: supported
    _forbid_host_reads(monkeypatch)
    y, stats = layer(x)
    (y.square().mean() + stats.load_balancing_loss + stats.z_loss).backward()
    assert x.grad is not None and layer.w_down.grad is not None and stats.tokens_per_expert.sum() == 2 * 16 * 2


def test_the_loop_kernel_reads_the_counts_itself():
    """Without the host list, the loop kernel (the fallback, and expert parallelism's) makes it."""
    x, w = torch.randn(9, 8), torch.randn(3, 4, 8)
    counts = torch.tensor([4, 0, 5])
    expected = torch.cat([x[:4] @ w[0].T, x[4:] @ w[2].T])
    torch.testing.assert_close(grouped_linear(x, w, counts, kernel="loop"), expected)
    torch.testing.assert_close(grouped_linear(x, w, counts, [4, 0, 5], kernel="loop"), expected)


def test_expert_counts_equal_bincount():
    experts = torch.tensor([[0, 3], [3, 0], [0, 3], [3, 1]])
    assert torch.equal(expert_counts(experts, 6), torch.bincount(experts.flatten(), minlength=6))
    assert expert_counts(experts, 6).dtype == torch.int64


def _block_graphs(block, x) -> tuple[int, list[str]]:
    attn = block.attn
    cos, sin = rope_tables(torch.arange(x.shape[1]), rope_inv_freq(attn.head_dim, 10000.0), x.dtype)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(block)(x, cos, sin)
    return explained.graph_break_count, [str(b.reason).splitlines()[0] for b in explained.break_reasons]


@HAS_GROUPED_MM
@pytest.mark.parametrize("setting", ["bf16 weights", "bf16 autocast on fp32 weights"])
def test_an_moe_block_compiles_to_one_graph(setting):
    """torch.compile (per block) sees no data-dependent shape or host read in an MoE block: one graph."""
    torch.manual_seed(0)
    model = DecoderLM(ModelConfig(**MOE))
    x = torch.randn(2, 16, 32)
    if setting == "bf16 weights":
        breaks, reasons = _block_graphs(model.to(torch.bfloat16).layers[0], x.to(torch.bfloat16))
    else:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            breaks, reasons = _block_graphs(model.layers[0], x)
    assert breaks == 0, reasons


def test_moe_trains_under_bf16_autocast_on_fp32_weights():
    """One GPU's setting (bf16 autocast, fp32 master weights): the grouped dispatch runs its experts in bf16
    and agrees with the readable reference dispatch."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g)
    router = torch.randn(4, 32, generator=g) * 0.1
    w_gate, w_up, w_down = (torch.randn(*s, generator=g) * 0.1 for s in ((4, 32, 32), (4, 32, 32), (4, 32, 32)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = route(x, router, 2, "topk_softmax")
        grouped = grouped_experts(x, r.weights, r.experts, w_gate, w_up, w_down)
        reference = reference_experts(x, r.weights, r.experts, w_gate, w_up, w_down)
    assert grouped.dtype == reference.dtype == torch.float32
    torch.testing.assert_close(grouped, reference, rtol=2e-2, atol=2e-3)
    model = DecoderLM(ModelConfig(**MOE))
    ids = torch.randint(0, 96, (2, 16), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_train_step_reads_the_device_once_whatever_its_micro_batches(monkeypatch):
    """The host reads of a step do not grow with gradient accumulation: the losses and expert counts are
    summed on the device and read once at the step's end."""
    reads = []

    def counted(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            reads.append(name)
            return original(self, *args, **kwargs)
        return read

    for name in ("cpu", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    counts = {}
    for accum in (1, 4):
        torch.manual_seed(0)
        model = DecoderLM(ModelConfig(**MOE))
        optimizer = adamw(model, 1e-3, weight_decay=0.0)
        batches = [torch.randint(0, 96, (2, 16)) for _ in range(accum)]
        reads.clear()
        record = train_step(model, batches, optimizer, 1e-3)
        counts[accum] = list(reads)
        assert sum(record["tokens_per_expert"][0]) == accum * 2 * 16 * 2
    assert counts[1] == counts[4]
