"""The measured matmul peak of a device: the FLOP/s of large square matmuls, the best of a few rounds.

MFU is quoted against the data-sheet peak (`lab.flops.PEAK_FLOPS`: H100/H200 bf16 989 TFLOP/s), which
no kernel reaches; against the peak a plain matmul measurably reaches on the same device, it says how
much of the attainable speed the training step gets. An (n, n) @ (n, n) product is 2 n^3 FLOPs.
"""

from __future__ import annotations

import time

import torch

# Large enough to saturate the device, small enough to take milliseconds: bf16 8192^3 is ~1.1 TFLOP.
DEFAULT_SIZE = {"cuda": 8192, "cpu": 512}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                        size: int | None = None, iters: int = 10, rounds: int = 5) -> float:
    """FLOP/s of `iters` chained (size, size) matmuls in `dtype` on `device`, the best of `rounds`.

    The best round, not the median: the question is what the device can do, and slow rounds are other
    work on the machine. One warm-up round comes first (kernel selection, clocks).
    """
    device = torch.device(device)
    n = size or DEFAULT_SIZE.get(device.type, 1024)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = (torch.randn(n, n, generator=g) / n**0.5).to(device=device, dtype=dtype)  # keeps the chain's scale
    best = float("inf")
    for r in range(rounds + 1):
        _sync(device)
        start = time.perf_counter()
        x = a
        for _ in range(iters):
            x = x @ b
        _sync(device)
        elapsed = time.perf_counter() - start
        if r > 0:
            best = min(best, elapsed)
    return 2.0 * n**3 * iters / best
