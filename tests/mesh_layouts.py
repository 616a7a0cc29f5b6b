"""Run under torchrun (gloo, CPU): shard a small model with each layout given on the command line, check what
each process holds, and check one forward and backward against the unsharded model on the whole batch.

    python -m torch.distributed.run --standalone --nproc_per_node 4 tests/mesh_layouts.py EP:SHARD_GROUP:EXPERTS ...

EP is `hardware.expert_parallel`, SHARD_GROUP `hardware.shard_group` (`-`: none, FSDP over every process),
EXPERTS the model's experts (0: dense). For each layout, rank 0 prints one line
`layout EP:SHARD_GROUP:EXPERTS loss_diff=... grad_diff=... norm_diff=...`; any other failure raises.
The tests call `run_layouts`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from lab.config import ModelConfig
from lab.distributed import clip_grad_norm_, full_tensor, setup, shard
from lab.expert_parallel import EXPERT_WEIGHTS
from lab.model import DecoderLM

SEQUENCES_PER_PROCESS, SEQ_LEN = 2, 16


def config(n_experts: int) -> ModelConfig:
    moe = {"n_experts": n_experts, "top_k": 2, "moe_ffn_dim": 24} if n_experts else {}
    return ModelConfig(vocab_size=256, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, max_seq_len=64, **moe)


def expected_piece(name: str, shape, ep: int, shard_group: int, shard_rank: int, n_experts: int) -> tuple[int, ...]:
    """The local shape a process must hold: every parameter its chunk of the first dimension over the
    shard group (FSDP2's chunks: ceil(rows / shard_group), the last ones shorter), the experts E / ep experts
    split over the shard_group / ep processes holding them, by whole experts when they divide, else by columns."""
    shape = list(shape)
    if ep > 1 and name.rsplit(".", 1)[-1] in EXPERT_WEIGHTS:
        local, over = n_experts // ep, shard_group // ep
        if local % over == 0:
            return (local // over, *shape[1:])
        return (local, shape[1] // over, *shape[2:])
    chunk = -(-shape[0] // shard_group)
    return (max(0, min(chunk, shape[0] - shard_rank * chunk)), *shape[1:])


def check(layout: str, world_size: int, rank: int, info) -> str:
    ep_text, group_text, experts_text = layout.split(":")
    ep, n_experts = int(ep_text), int(experts_text)
    shard_group = None if group_text == "-" else int(group_text)
    cfg = config(n_experts)
    torch.manual_seed(0)
    whole = DecoderLM(cfg)
    model = DecoderLM(cfg)
    model.load_state_dict(whole.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (SEQUENCES_PER_PROCESS * world_size, SEQ_LEN),
                        generator=torch.Generator().manual_seed(1))
    reference = whole(ids, labels=ids)
    reference.loss.backward()

    model = shard(model, info, expert_parallel=ep, shard_group=shard_group)
    group = shard_group or world_size
    for name, p in model.named_parameters():
        local = tuple(p.to_local().shape)
        # Shard groups are consecutive ranks: this process is number rank % group of its own.
        assert local == expected_piece(name, p.shape, ep, group, rank % group, n_experts), (layout, name, local)
        if shard_group is not None and shard_group < world_size:  # HSDP: replicated across the groups
            assert type(p.placements[0]).__name__ == "Replicate", (layout, name, p.placements)

    mine = ids[rank * SEQUENCES_PER_PROCESS:(rank + 1) * SEQUENCES_PER_PROCESS]
    out = model(mine, labels=mine)
    out.loss.backward()
    loss = out.loss.detach().clone()
    dist.all_reduce(loss)
    loss_diff = abs(loss.item() / world_size - reference.loss.item())
    grad_diff = max((full_tensor(p.grad) - whole.get_parameter(name).grad).abs().max().item()
                    for name, p in model.named_parameters())
    norm = clip_grad_norm_(model.parameters(), 1e9)
    norm_diff = abs(norm.item() - torch.nn.utils.get_total_norm([p.grad for p in whole.parameters()]).item())
    return f"layout {layout} loss_diff={loss_diff:.3g} grad_diff={grad_diff:.3g} norm_diff={norm_diff:.3g}"


def run_layouts(*layouts: str, nproc: int = 4) -> dict[str, dict[str, float]]:
    """Run this script on `nproc` gloo processes; {layout: {"loss_diff": ..., "grad_diff": ..., "norm_diff": ...}}."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                             __file__, *layouts], capture_output=True, text=True, env=env, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for line in result.stdout.splitlines():
        if line.startswith("layout "):
            _, layout, *values = line.split()
            found[layout] = {k: float(v) for k, v in (value.split("=") for value in values)}
    assert sorted(found) == sorted(layouts), result.stdout[-3000:]
    return found


def main(layouts: list[str]) -> None:
    info = setup("cpu")
    try:
        for layout in layouts:
            line = check(layout, info.world_size, info.rank, info)
            if info.is_main:
                print(line, flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
