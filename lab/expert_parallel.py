"""Expert parallelism (EP): each process of a group holds E / R of an MoE layer's experts, and tokens
travel to the process that holds their expert and back, by all-to-all.

Shapes (as in `lab.moe`): N tokens of this process, K top_k, D model dim, F expert intermediate size,
E experts; W processes in all, R in an expert-parallel group, L = E / R experts local to each; M = N * K
rows this process sends (its assignments, sorted by expert), P rows it receives (assignments to its
experts from every process of the group).

The layout (GShard, Lepikhin et al. 2020, arXiv 2006.16668; torchtitan's ExpertParallel over stacked
(E, F, D) expert weights): the W processes form a 2-D DeviceMesh ("dp", "ep") of shape (W / R, R), row
major, so an EP group is R consecutive ranks (inside a node, where the all-to-all is fast). The stacked
expert weights w_gate, w_up (E, F, D) and w_down (E, D, F) are DTensors on that mesh with placements
(Replicate(), Shard(0)): process r of its EP group holds experts r * L .. r * L + L - 1, and the W / R
EP groups hold the same experts. Every other parameter is sharded by FSDP2 over all W processes as
without EP (`lab.distributed.shard`), which leaves the expert weights alone (`ignored_params`).

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
gradient already sums what every process of its EP group sent through it; `GradientMean` sums it over
the "dp" dimension too (the other EP groups' tokens) and divides by W, the same mean. The
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
MESH_DIMS = ("dp", "ep")  # data-parallel x expert-parallel


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
    """Identity forward; the backward turns an expert weight's gradient into the mean over the W processes:
    summed over the "dp" dimension (the EP groups holding the same experts) and divided by W (see the
    module docstring). In the graph rather than a hook on the parameter, which `Module.to_empty` drops."""

    @staticmethod
    def forward(ctx, local_weight, shard: "ExpertShard"):
        ctx.shard = shard
        return local_weight.view_as(local_weight)

    @staticmethod
    def backward(ctx, grad):
        grad = grad / ctx.shard.world_size
        if ctx.shard.replicas.size() > 1:
            dist.all_reduce(grad, group=ctx.shard.replicas)
        return grad, None


def _local(weight: torch.Tensor, shard: "ExpertShard", like: torch.Tensor) -> torch.Tensor:
    """This process's experts of a stacked weight (its DTensor shard), in the dtype of the activations
    (FSDP2's bf16 parameter policy leaves the expert weights fp32: cast as it casts the others)."""
    local = GradientMean.apply(weight.to_local(), shard)
    return local if local.dtype == like.dtype else local.to(like.dtype)


class ExpertShard:
    """One process's place in the 2-D ("dp", "ep") mesh, and the dispatch an MoE layer runs through it
    (`MoE.forward` calls `routed_experts` and `global_counts` when its `expert_shard` is set)."""

    def __init__(self, mesh):
        self.mesh = mesh
        self.group = mesh.get_group("ep")
        self.size = mesh.size(1)  # R
        self.replicas = mesh.get_group("dp")  # the processes that hold the same experts
        self.world_size = mesh.size()

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


def distribute_experts(model: nn.Module, mesh) -> list[nn.Parameter]:
    """Make every MoE layer's stacked expert weights DTensors on `mesh` ("dp", "ep"), Shard(0) along the
    experts on "ep", and point the layers at their `ExpertShard`; returns those parameters (for FSDP2 to
    leave alone).

    Every process holds the same whole values (the same seed, the same checkpoint, or the meta device),
    so each keeps its slice without communication.
    """
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    shard = ExpertShard(mesh)
    placements = (Replicate(), Shard(0))
    distributed = []
    for module in model.modules():
        if not isinstance(module, MoE):
            continue
        for name in EXPERT_WEIGHTS:
            weight = getattr(module, name)
            local = distribute_tensor(weight.data, mesh, placements, src_data_rank=None)
            param = nn.Parameter(local, requires_grad=weight.requires_grad)
            module.register_parameter(name, param)
            distributed.append(param)
        module.expert_shard = shard
    return distributed


def expert_mesh(device_type: str, world_size: int, size: int):
    """The 2-D DeviceMesh ("dp", "ep") of shape (world_size / size, size): EP groups of consecutive ranks."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, (world_size // size, size), mesh_dim_names=MESH_DIMS)
