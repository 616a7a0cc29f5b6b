"""Expert parallelism (EP): each process of a group holds E / R of an MoE layer's experts, and tokens
travel to the process that holds their expert and back, by all-to-all.

Shapes (as in `lab.moe`): N tokens of this process, K top_k, D model dim, F expert intermediate size,
E experts; W processes in all, R in an expert-parallel group, L = E / R experts local to each; M = N * K
rows this process sends (its assignments, sorted by expert), P rows it receives (assignments to its
experts from every process of the group).

The layout (GShard, Lepikhin et al. 2020, arXiv 2006.16668; torchtitan's ExpertParallel over stacked
(E, F, D) expert weights, sharded by FSDP2 as torchtitan shards them): the W processes form a 3-D
DeviceMesh ("replicate", "shard", "ep") of shape (W / S, S / R, R), row major, where S is the shard group
of HSDP (`hardware.shard_group`, W when unset). An EP group is R consecutive ranks (inside a node, where the
all-to-all is fast), and R divides S, so an EP group lies inside one shard group. The stacked expert
weights w_gate, w_up (E, F, D) and w_down (E, D, F) are DTensors Shard(0) on "ep": process r of its EP
group holds experts r * L .. r * L + L - 1. FSDP2 then shards those L experts over "shard" (the S / R
processes of the shard group that hold the same experts) and replicates them over "replicate" (the other
shard groups): each process stores 1 / (S / R) of its L experts, so the experts cost every process
E / S of their memory, as the other parameters do. FSDP2 gathers a layer's L experts inside the shard
group before its forward and reduce-scatters their gradients after its backward (`expert_placement`);
every other parameter (attention, norms, routers, shared experts, embeddings) it shards over the
shard group, as without EP (`lab.distributed.shard`).

Dispatch, per MoE layer: each process routes its own tokens (`lab.moe.route`) and sorts its M
assignments by expert (`lab.moe.sort_by_expert`); sorted by expert they are sorted by owning process
too. One all-to-all of counts tells each process how many rows of each local expert each peer sends;
a second moves the rows; the receiver groups them by local expert (`received_order`) and runs the
existing grouped expert MLPs (`lab.moe.expert_mlps`); a third all-to-all sends the results back, where
the routing weights combine them (`lab.moe.combine`). Autograd runs through the row exchanges (the
backward of an all-to-all is the all-to-all with the splits swapped). Invariant: the layer's output,
its losses and its tokens per expert equal the unsharded layer's on the union of the processes' tokens,
up to fp32 reduction order.

Gradients and losses: process r's loss is the mean over its own tokens, and FSDP2 averages gradients
over the W processes, so the model trains on the mean of the W losses. An expert weight's local
gradient already sums what every process of its EP group sent through it; FSDP2 averages it over the
W / R processes that hold the same experts (the other EP groups' tokens), and `GradientMean` divides it
by R, which makes it the same mean over W. The
load-balancing loss takes f_e from the counts of every process (`global_counts`), which makes the mean
of the processes' losses the unsharded model's; without EP each process keeps its own f_e (Megatron).
On one process, or with R = 1, nothing here runs: the MoE layer is today's.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from lab.config import ModelConfig
from lab.errors import RecipeError
from lab.moe import MoE, combine, expert_mlps, sort_by_expert

EXPERT_WEIGHTS = ("w_gate", "w_up", "w_down")
# HSDP replicas x processes sharing a shard group's experts x expert-parallel group
MESH_DIMS = ("replicate", "shard", "ep")


def check_expert_parallel(size: int, cfg: ModelConfig, world_size: int) -> None:
    """Raise one RecipeError naming `hardware.expert_parallel` when `size` cannot split this model's
    experts over this run's `world_size` processes (launched by torchrun when more than one)."""
    if size == 1:
        return
    key = "hardware.expert_parallel"
    if not cfg.is_moe:
        raise RecipeError(key, f"{size} asks for expert parallelism, but the model is dense (it has no experts)")
    if cfg.n_experts % size:
        raise RecipeError(key, f"{size} does not divide the model's {cfg.n_experts} experts")
    if world_size == 1:
        raise RecipeError(key, f"{size} needs {size} processes or a multiple of it: launch with "
                               f"`python -m torch.distributed.run --nproc_per_node {size} -m lab train ...`")
    if world_size % size:
        raise RecipeError(key, f"{size} does not divide the {world_size} processes")


class AllToAll(torch.autograd.Function):
    """`dist.all_to_all_single` of rows, differentiable: x (S, ...) goes out in blocks of `send_splits`
    rows, one per process of `group`; returns the (sum(recv_splits), ...) rows received, in blocks of
    `recv_splits`, by sender. The backward sends the gradients back the way the rows came: the same
    exchange with the splits swapped."""

    @staticmethod
    def forward(ctx, x, recv_splits: list[int], send_splits: list[int], group):
        ctx.recv_splits, ctx.send_splits, ctx.group = recv_splits, send_splits, group
        received = x.new_empty((sum(recv_splits), *x.shape[1:]))
        dist.all_to_all_single(received, x.contiguous(), recv_splits, send_splits, group=group)
        return received

    @staticmethod
    def backward(ctx, grad):
        return AllToAll.apply(grad.contiguous(), ctx.send_splits, ctx.recv_splits, ctx.group), None, None, None


def received_order(recv_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, counts) of the rows a process receives, grouped by its local expert.

    recv_counts (R, L): row r holds how many rows process r sends for each local expert; the P rows
    arrive in blocks (r, l), r-major. `order` (P,) lists them by local expert (stable: within an expert,
    by sender, then as sent), `counts` (L,) how many each local expert gets.
    """
    recv_counts_RL = recv_counts
    R, L = recv_counts_RL.shape
    local_expert_RL = torch.arange(L, device=recv_counts_RL.device).repeat(R)
    local_expert_P = local_expert_RL.repeat_interleave(recv_counts_RL.flatten())
    return torch.argsort(local_expert_P, stable=True), recv_counts_RL.sum(dim=0)


def local_experts(x: torch.Tensor, recv_counts: torch.Tensor, w_gate, w_up, w_down) -> torch.Tensor:
    """The local experts' outputs for the rows received x (P, D), in the order received.

    recv_counts (R, L) as `received_order` reads it; w_gate and w_up (L, F, D), w_down (L, D, F).
    """
    x_PD = x
    order_P, counts_L = received_order(recv_counts)
    y_sorted_PD = expert_mlps(x_PD[order_P], counts_L, w_gate, w_up, w_down)
    return y_sorted_PD[torch.argsort(order_P)]  # undo the grouping: row i answers received row i


class GradientMean(torch.autograd.Function):
    """Identity forward; the backward divides an expert weight's gradient by R, the EP group's size. FSDP2
    then averages it over the W / R processes holding the same experts, and the two make it the mean over
    the W processes (see the module docstring). In the graph rather than a hook on the parameter, which
    `Module.to_empty` drops."""

    @staticmethod
    def forward(ctx, local_weight, shard: "ExpertShard"):
        ctx.shard = shard
        return local_weight.view_as(local_weight)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.shard.size, None


def _local(weight: torch.Tensor, shard: "ExpertShard", like: torch.Tensor) -> torch.Tensor:
    """This process's experts of a stacked weight (its DTensor shard on "ep"), in the dtype of the
    activations (under CPU autocast the weights stay fp32, and the grouped matmul takes one dtype)."""
    local = GradientMean.apply(weight.to_local(), shard)
    return local if local.dtype == like.dtype else local.to(like.dtype)


class ExpertShard:
    """One process's EP group, and the dispatch an MoE layer runs through it (`MoE.forward` calls
    `routed_experts` and `global_counts` when its `expert_shard` is set)."""

    def __init__(self, ep_mesh):
        self.group = ep_mesh.get_group()
        self.size = ep_mesh.size()  # R

    def routed_experts(self, x, weights, experts, w_gate, w_up, w_down) -> torch.Tensor:
        """What `lab.moe.grouped_experts` computes with all E experts, for this process's tokens x (N, D),
        routed to `experts` (N, K) with `weights` (N, K), with only L = E / R experts here."""
        x_ND = x
        w_gate_LFD, w_up_LFD, w_down_LDF = (_local(w, self, x_ND) for w in (w_gate, w_up, w_down))
        R, L = self.size, w_gate_LFD.shape[0]
        order_M, token_M, counts_E = sort_by_expert(experts, R * L)
        send_counts_RL = counts_E.view(R, L)  # process r owns experts r * L .. r * L + L - 1
        recv_counts_RL = torch.empty_like(send_counts_RL)
        dist.all_to_all_single(recv_counts_RL, send_counts_RL, group=self.group)
        send_splits, recv_splits = send_counts_RL.sum(dim=1).tolist(), recv_counts_RL.sum(dim=1).tolist()
        x_sent_MD = x_ND[token_M]
        x_recv_PD = AllToAll.apply(x_sent_MD, recv_splits, send_splits, self.group)
        y_recv_PD = local_experts(x_recv_PD, recv_counts_RL, w_gate_LFD, w_up_LFD, w_down_LDF)
        y_back_MD = AllToAll.apply(y_recv_PD, send_splits, recv_splits, self.group)
        return combine(y_back_MD, weights, order_M, token_M, x_ND)

    def global_counts(self, tokens_per_expert: torch.Tensor) -> torch.Tensor:
        """Tokens per expert summed over every process (no gradient: counts of discrete choices)."""
        counts_E = tokens_per_expert.clone()
        dist.all_reduce(counts_E)
        return counts_E


def distribute_experts(model: nn.Module, ep_mesh) -> list[nn.Parameter]:
    """Make every MoE layer's stacked expert weights DTensors Shard(0) along the experts on the 1-D
    `ep_mesh`, and point the layers at their `ExpertShard`; returns those parameters (for FSDP2 to shard
    further over the processes that hold the same experts, `expert_placement`).

    Every process holds the same whole values (the same seed, the same checkpoint, or the meta device),
    so each keeps its slice without communication.
    """
    from torch.distributed.tensor import Shard, distribute_tensor

    shard = ExpertShard(ep_mesh)
    distributed = []
    for module in model.modules():
        if not isinstance(module, MoE):
            continue
        for name in EXPERT_WEIGHTS:
            weight = getattr(module, name)
            local = distribute_tensor(weight.data, ep_mesh, (Shard(0),), src_data_rank=None)
            param = nn.Parameter(local, requires_grad=weight.requires_grad)
            module.register_parameter(name, param)
            distributed.append(param)
        module.expert_shard = shard
    return distributed


def expert_mesh(device_type: str, world_size: int, size: int, shard_group: int):
    """The 3-D DeviceMesh ("replicate", "shard", "ep") of shape (world_size / shard_group,
    shard_group / size, size): EP groups of consecutive ranks inside shard groups of consecutive ranks."""
    from torch.distributed.device_mesh import init_device_mesh

    shape = (world_size // shard_group, shard_group // size, size)
    return init_device_mesh(device_type, shape, mesh_dim_names=MESH_DIMS)


def expert_placement(mesh, experts: list[nn.Parameter], n_experts: int):
    """FSDP2's `shard_placement_fn` for a model whose `experts` are on `mesh` (`expert_mesh`): the expert
    weights are sharded over "shard" and replicated over "replicate" (their own FSDP2 parameter group,
    gathered and reduced among the processes that hold the same experts), everything else as the
    `fully_shard` call says (None).

    Along dim 0 (whole experts) when the L = E / R local experts split evenly over the S / R processes;
    otherwise along dim 1 (each process a slice of every local expert: F of w_gate and w_up, D of
    w_down), as torchtitan does when there are fewer local experts than processes to shard them over
    (and when dim 1 does not split evenly either, along dim 0 with FSDP2's padding).
    """
    # `fully_shard` documents ShardPlacementResult as what `shard_placement_fn` returns to put a parameter on
    # another mesh (its example: MoE experts); torch 2.13 defines it here without exporting it.
    from torch.distributed.fsdp._fully_shard._fsdp_common import (FSDPMeshInfo, HSDPMeshInfo,
                                                                   ShardPlacementResult)
    from torch.distributed.tensor import Shard

    # One FSDPMeshInfo for all of them: FSDP2 puts the parameters of one mesh into one group.
    if mesh.size(0) > 1:
        info = HSDPMeshInfo(mesh["replicate", "shard"], shard_mesh_dim=1, replicate_mesh_dim=0)
    else:
        info = FSDPMeshInfo(mesh["shard"], shard_mesh_dim=0)
    local_experts, over = n_experts // mesh.size(2), mesh.size(1)
    ids = {id(p) for p in experts}

    def placement(param: nn.Parameter):
        if id(param) not in ids:
            return None
        dim = 0 if local_experts % over == 0 or param.shape[1] % over else 1
        return ShardPlacementResult(Shard(dim), info)

    return placement
