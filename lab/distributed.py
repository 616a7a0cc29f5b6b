"""Running under torchrun: process group, FSDP2 sharding, full state dicts, and reductions.

`python -m torch.distributed.run --nproc_per_node N -m lab train ...` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK in their environment. `setup` joins them into a process group (gloo on
CPU, nccl on GPU); `shard` wraps the model with FSDP2: `fully_shard` on every block, then on the root,
so each block's parameters are gathered just before its forward and freed after (torchtitan's
layout), over all processes or, with `hardware.shard_group`, inside groups of that many and replicated
across them (HSDP). On GPU with bf16 precision the parameters compute in bf16 and gradients reduce in fp32.
With expert parallelism (`hardware.expert_parallel`) the experts are split first (`lab.expert_parallel`).

Under torchrun each process writes its own shards of a training checkpoint (lab.train.state,
torch.distributed.checkpoint); the whole-state helpers here (`full_model_state`, `full_optimizer_state`,
`load_optimizer_state`) serve one-process checkpoints and their resumes on any number of processes.
Without torchrun all of this is a no-op around the plain model, so one code path trains on a laptop and
on a cluster.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lab.errors import LabError, RecipeError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among world_size processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """The one process that writes metrics and checkpoints."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto`: the process's GPU when CUDA is there, else the CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise LabError("recipe hardware.device: cuda was asked for, but no CUDA device is available")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def current_device(preference: str = "auto") -> torch.device:
    """This process's device under `preference` (its LOCAL_RANK's GPU under torchrun)."""
    return pick_device(preference, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device_preference: str = "auto") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, device)


def teardown(info: DistInfo) -> None:
    if info.sharded and dist.is_initialized():
        # At the end of a run that succeeded, every process waits for the others before leaving the group:
        # a process that destroyed its group while the other was still on its way there was aborted once
        # by gloo ("terminate called without an active exception", SIGABRT; a 2-process test under load).
        # Not while an exception propagates: a process that died would leave the others at the barrier.
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.sharded:
        dist.barrier()


def check_shard_group(shard_group: int | None, expert_parallel: int, world_size: int) -> None:
    """Raise one RecipeError naming `hardware.shard_group` when HSDP with shard groups of `shard_group`
    processes cannot lay out this run's `world_size` processes (None: one group of all of them)."""
    if shard_group is None:
        return
    key = "hardware.shard_group"
    if world_size % shard_group:
        launch = (" (more than one process needs torchrun: `python -m torch.distributed.run --nproc_per_node N "
                  "-m lab train ...`)" if world_size == 1 else "")
        raise RecipeError(key, f"{shard_group} does not divide the {world_size} processes{launch}")
    if shard_group % expert_parallel:
        raise RecipeError(key, f"{shard_group} is not a multiple of hardware.expert_parallel {expert_parallel}: "
                               "an expert-parallel group must lie inside one shard group")


def data_parallel_mesh(device_type: str, world_size: int, shard_group: int | None):
    """FSDP2's mesh: 1-D over all processes (each parameter sharded over all of them), or with shard groups
    of `shard_group` consecutive ranks the 2-D ("replicate", "shard") mesh of shape
    (world_size / shard_group, shard_group): HSDP, sharded inside a group, replicated across groups."""
    from torch.distributed.device_mesh import init_device_mesh

    if shard_group is None or shard_group == world_size:
        return init_device_mesh(device_type, (world_size,))
    return init_device_mesh(device_type, (world_size // shard_group, shard_group),
                            mesh_dim_names=("replicate", "shard"))


def shard(model: nn.Module, info: DistInfo, bf16: bool = False, expert_parallel: int = 1,
          shard_group: int | None = None) -> nn.Module:
    """FSDP2: `fully_shard` each block, then the root (embedding, final norm, LM head).

    With `shard_group` S (`hardware.shard_group`) the parameters are sharded inside groups of S
    consecutive ranks and replicated across the groups (HSDP, `data_parallel_mesh`): the all-gathers and
    reduce-scatters of every step stay inside a group (a node), and only one all-reduce of the gradient
    shards a step crosses groups. bf16 mixed precision (bf16 parameters in compute, fp32 gradient
    reduction) on GPU only: on CPU the training loop uses autocast instead. With `expert_parallel` R > 1
    the MoE layers' stacked expert weights are first split along the experts over groups of R processes
    (`lab.expert_parallel`), and FSDP2 shards them further over the processes of the shard group that
    hold the same experts, in a parameter group of their own (`expert_placement`).
    """
    if not info.sharded:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    check_shard_group(shard_group, expert_parallel, info.world_size)
    kwargs = {"mesh": data_parallel_mesh(info.device.type, info.world_size, shard_group)}
    if bf16 and info.device.type == "cuda":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if expert_parallel > 1:
        from lab.expert_parallel import distribute_experts, expert_mesh, expert_placement

        mesh = expert_mesh(info.device.type, info.world_size, expert_parallel, shard_group or info.world_size)
        experts = distribute_experts(model, mesh["ep"])
        kwargs["shard_placement_fn"] = expert_placement(mesh, experts, model.config.n_experts)
    for block in model.layers:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module, info: DistInfo) -> dict[str, torch.Tensor]:
    """The whole model's parameters on the CPU, on rank 0 (other ranks get {}). Every rank calls it."""
    if not info.sharded:
        return {name: t.detach().cpu() for name, t in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo) -> dict:
    """The optimizer's state keyed by parameter name ({"state": {name: {...}}, "param_groups": [...]}).

    Whole and on the CPU on rank 0 (other ranks get {} when sharded). Every rank calls it.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = _full_options() if info.sharded else StateDictOptions(cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict, info: DistInfo) -> None:
    """Load a name-keyed optimizer state (as `full_optimizer_state` gives); each rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # The loader fills the optimizer's own state first with a zero step, which it skips when gradients exist.
    optimizer.zero_grad(set_to_none=True)
    options = StateDictOptions(full_state_dict=True) if info.sharded else None
    set_optimizer_state_dict(model, optimizer, state, options=options)


def all_reduce(tensor: torch.Tensor, info: DistInfo, op: str = "mean") -> torch.Tensor:
    """Sum, mean or max of `tensor` over the processes (the tensor itself when there is one)."""
    if not info.sharded:
        return tensor
    out = tensor.detach().to(info.device, copy=True)  # nccl reduces GPU tensors only
    dist.all_reduce(out, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    out = out.to(tensor.device)
    return out / info.world_size if op == "mean" else out


def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """Clip the gradients to a global L2 norm of `max_norm`; returns that norm before clipping, a plain tensor.

    FSDP2's gradients are DTensors on one mesh, which `torch.nn.utils.clip_grad_norm_` handles (the path
    taken whenever there is at most one mesh). Under expert parallelism the expert weights' gradients
    live on a mesh of their own (FSDP2's over "ep", `lab.expert_parallel`) and the others on the
    data-parallel mesh: each mesh's norm is made whole (`full_tensor`), the squares add up to the global
    norm, and every gradient scales by one factor.
    """
    params = [p for p in parameters if p.grad is not None]
    by_mesh: dict = {}
    for p in params:
        by_mesh.setdefault(getattr(p.grad, "device_mesh", None), []).append(p.grad)
    if len(by_mesh) <= 1:
        return full_tensor(torch.nn.utils.clip_grad_norm_(params, max_norm))
    norms = [full_tensor(torch.nn.utils.get_total_norm(grads)) for grads in by_mesh.values()]
    device = norms[0].device
    total = torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)  # torch.nn.utils.clip_grads_with_norm_'s factor
    for grads in by_mesh.values():
        local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
        torch._foreach_mul_(local, coef.to(local[0].device))
    return total


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor (a sharded result, e.g. the global gradient norm) as a plain tensor."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
