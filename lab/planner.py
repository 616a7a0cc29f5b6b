"""Plan a training run on a GPU cluster before renting it: memory per GPU, a parallel layout that fits, the
communication it costs and the time per step it allows. An estimate from the model's shapes and the
GPUs' data sheets, never a measurement (`python -m lab bench mfu` measures).

The model of a step, per GPU (every assumption is here, so a reader can disagree with one):

- **State**: fp32 master weights, fp32 gradients and AdamW's two fp32 moments, 16 bytes per parameter,
  sharded by FSDP2 over a shard group of S GPUs (ZeRO-3). With S < N the layout is HSDP: N/S replicas of
  that group, which all-reduce the gradient shards once per step. Plus the gathered (unsharded) weights
  of two blocks at a time (the one computing and the one prefetched) in the compute dtype.
- **Activations** (Korthikanti et al. 2022, with flash attention, which stores no T x T scores): per
  token and block, the tensors backward reads: the block's input and two norm outputs (3D), q, k, v and
  the attention output (2 q + 2 kv), the MLP's gate, up, activation and product (4 F_active; an MoE
  token's top-k experts); plus the fp32 logits and their gradient (2 V per token, 4 bytes). With
  activation checkpointing only each block's input is kept, and one block's tensors are recomputed.
- **Expert parallelism** (EP) places E / EP experts on each GPU of an EP group inside a node and sends
  tokens to them with all-to-all (forward and backward, dispatch and combine); the experts' weights are
  then gathered only inside their EP shard, not across the whole shard group.
- **Time**: matmuls at `COMPUTE_EFFICIENCY` of the bf16 data-sheet peak (large GEMMs reach 60-75%
  on H100; the rest of a step, norms and softmax, runs slower); FSDP's all-gathers and reduce-scatters
  overlap compute (prefetch), the all-to-all does not. The bottleneck link is NVLink inside a node and
  the node's network (per GPU) across nodes.

The lab's trainer runs each layout planned here: the shard group is the recipe's `hardware.shard_group`
(HSDP, `lab.distributed.shard`; unset when it is every GPU) and EP its `hardware.expert_parallel`, whose
E / EP experts per GPU FSDP2 shards over the shard group's GPUs that hold the same experts
(`lab.expert_parallel`), so the experts cost 1 / shard group of their state per GPU, as the rest does.
The trainer needs the EP group inside a shard group (EP divides the shard group), and so does the plan.

The layout chosen: the smallest shard group (in whole nodes, or less than a node) whose memory fits
with one sequence per GPU, so that as little traffic as possible crosses nodes; then the largest
micro-batch (up to 16 sequences) that fits, without activation checkpointing when it fits without;
then the gradient accumulation that brings the global batch nearest the recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.config import ModelConfig
from lab.errors import LabError
from lab.flops import PEAK_FLOPS, active_parameters, flops_per_token, total_parameters

GB = 1e9
STATE_BYTES_PER_PARAMETER = 16  # fp32 weight + fp32 gradient + AdamW's two fp32 moments
COMPUTE_EFFICIENCY = 0.6  # the share of the bf16 peak the step's matmuls reach (an assumption)
MAX_MICRO_BATCH = 16


@dataclass(frozen=True)
class GPU:
    """A data-sheet GPU: memory, bf16 dense peak (from lab.flops.PEAK_FLOPS), and per-GPU bandwidth in one
    direction over NVLink (inside a node) and over the network (between nodes)."""

    name: str
    peak_key: str
    memory_gb: float
    nvlink_gb_s: float
    network_gb_s: float

    @property
    def peak_flops(self) -> float:
        return PEAK_FLOPS[self.peak_key]


# NVLink: H100/H200 SXM 900 GB/s and A100 600 GB/s both directions together, H800 400; network: one
# 400 Gb/s (A100: 200 Gb/s) InfiniBand NIC per GPU, the usual DGX/HGX build.
GPUS = {
    "h100": GPU("H100-SXM 80GB", "H100-SXM", 80, 450, 50),
    "h200": GPU("H200-SXM 141GB", "H200-SXM", 141, 450, 50),
    "h800": GPU("H800-SXM 80GB", "H800-SXM", 80, 200, 50),
    "a100": GPU("A100-SXM 80GB", "A100", 80, 300, 25),
}


@dataclass(frozen=True)
class Workload:
    """One model trained at one batch: what a stage of a recipe asks of the cluster."""

    name: str
    config: ModelConfig
    seq_len: int
    global_sequences: int  # sequences per optimizer step
    compute_bytes: int  # 2 under bf16 autocast, 4 in fp32
    steps: int


@dataclass(frozen=True)
class Plan:
    workload: Workload
    gpus: int
    gpu: GPU
    gpus_per_node: int
    shard_group: int
    expert_parallel: int
    micro_batch: int
    grad_accum: int
    checkpointing: bool
    memory: dict[str, float]  # bytes per GPU, by what holds them
    traffic: dict[str, float]  # bytes per GPU per step, by collective
    compute_s: float
    communication_s: float
    step_s: float

    @property
    def global_sequences(self) -> int:
        return self.micro_batch * self.grad_accum * self.gpus

    @property
    def memory_total(self) -> float:
        return sum(self.memory.values())

    @property
    def mfu(self) -> float:
        tokens = self.global_sequences * self.workload.seq_len
        return tokens * flops_per_token(self.workload.config, self.workload.seq_len) / (
            self.step_s * self.gpus * self.gpu.peak_flops)

    @property
    def replicas(self) -> int:
        return self.gpus // self.shard_group


def _expert_parameters(cfg: ModelConfig) -> int:
    return sum(3 * cfg.dim * cfg.moe_ffn_dim * cfg.n_experts for layer in range(cfg.n_layers)
               if cfg.is_moe_layer(layer))


def _block_parameters(cfg: ModelConfig) -> int:
    """The largest block's weights (what FSDP gathers at once)."""
    return (total_parameters(cfg) - cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2)) // cfg.n_layers


def _activation_bytes_per_token(cfg: ModelConfig, compute_bytes: int, checkpointing: bool) -> float:
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    f_active = cfg.top_k * cfg.moe_ffn_dim if cfg.is_moe else cfg.ffn_dim
    block = compute_bytes * (3 * cfg.dim + 2 * q + 2 * kv + 4 * f_active)
    logits = 2 * 4 * cfg.vocab_size
    if checkpointing:
        return cfg.n_layers * compute_bytes * cfg.dim + block + logits
    return cfg.n_layers * block + logits


def _layout(work: Workload, gpus: int, gpu: GPU, per_node: int, shard: int, ep: int, micro: int,
            checkpointing: bool) -> Plan:
    cfg = work.config
    total = total_parameters(cfg)
    experts = _expert_parameters(cfg)
    tokens = micro * work.seq_len
    memory = {
        "weights, gradients, AdamW": STATE_BYTES_PER_PARAMETER * total / shard,
        "gathered blocks": 2 * work.compute_bytes * (_block_parameters(cfg) - (1 - 1 / ep) *
                                                     experts / cfg.n_layers),
        "activations": tokens * _activation_bytes_per_token(cfg, work.compute_bytes, checkpointing),
    }
    accum = max(1, round(work.global_sequences / (micro * gpus)))  # the global batch nearest the recipe's
    # Per micro-batch, FSDP gathers the weights twice (forward, backward) and reduce-scatters gradients; the
    # experts only inside their EP shard (shard / ep GPUs) when EP > 1.
    dense_part, expert_part = total - experts, experts / ep
    within = (shard - 1) / shard
    traffic = {
        "all-gather": accum * 2 * work.compute_bytes * (dense_part + expert_part) * within,
        "reduce-scatter": accum * 4 * (dense_part + expert_part) * within,
    }
    if gpus > shard:
        replicas = gpus // shard
        traffic["all-reduce (HSDP)"] = 2 * 4 * total / shard * (replicas - 1) / replicas
    if ep > 1:
        moe_layers = sum(cfg.is_moe_layer(layer) for layer in range(cfg.n_layers))
        traffic["all-to-all (EP)"] = (accum * moe_layers * 4 * tokens * cfg.top_k * cfg.dim * work.compute_bytes
                                      * (ep - 1) / ep)
    fsdp_bw = gpu.nvlink_gb_s if shard <= per_node else gpu.network_gb_s
    fsdp_s = sum(v for k, v in traffic.items() if k != "all-to-all (EP)") / (fsdp_bw * GB)
    if gpus > shard and shard <= per_node:  # the replicas' all-reduce crosses nodes
        fsdp_s += traffic["all-reduce (HSDP)"] * (1 / (gpu.network_gb_s * GB) - 1 / (gpu.nvlink_gb_s * GB))
    a2a_s = traffic.get("all-to-all (EP)", 0.0) / (gpu.nvlink_gb_s * GB)
    flops = accum * tokens * flops_per_token(cfg, work.seq_len) * (4 / 3 if checkpointing else 1)
    compute_s = flops / (gpu.peak_flops * COMPUTE_EFFICIENCY)
    return Plan(work, gpus, gpu, per_node, shard, ep, micro, accum, checkpointing, memory, traffic, compute_s,
                fsdp_s + a2a_s, max(compute_s, fsdp_s) + a2a_s)


def _shard_groups(gpus: int, per_node: int) -> list[int]:
    """Shard-group sizes to try, smallest first: divisors of a node, then whole nodes doubling."""
    sizes = [s for s in range(1, min(gpus, per_node) + 1) if per_node % s == 0 and gpus % s == 0]
    s = per_node * 2
    while s <= gpus:
        if gpus % s == 0:
            sizes.append(s)
        s *= 2
    if gpus not in sizes and gpus % per_node == 0:
        sizes.append(gpus)
    return sizes


def _micro_batches(work: Workload, gpus: int) -> list[int]:
    """Micro-batches (sequences per GPU) worth trying: up to the recipe's sequences per GPU per step (more
    would overshoot its global batch), at most MAX_MICRO_BATCH."""
    per_gpu = max(1, work.global_sequences // gpus)
    return [m for m in (1, 2, 4, 8, 16, 3, 6, 12) if m <= min(per_gpu, MAX_MICRO_BATCH)]


def plan(work: Workload, gpus: int, gpu: GPU, per_node: int = 8, memory_reserve: float = 0.9) -> Plan:
    """The layout for `work` on `gpus` GPUs of kind `gpu`, or LabError saying why none fits."""
    if gpus < 1:
        raise LabError(f"--gpus: must be at least 1, got {gpus}")
    if gpus > per_node and gpus % per_node:
        raise LabError(f"--gpus: {gpus} is not a whole number of {per_node}-GPU nodes")
    cfg = work.config
    budget = gpu.memory_gb * GB * memory_reserve
    ep = 1
    if cfg.is_moe:
        ep = max(d for d in range(1, min(cfg.n_experts, per_node, gpus) + 1)
                 if cfg.n_experts % d == 0 and gpus % d == 0)
    for shard in _shard_groups(gpus, per_node):
        if shard % ep:  # the trainer places each EP group inside one shard group
            continue
        fits = [p for checkpointing in (False, True) for micro in _micro_batches(work, gpus)
                for p in [_layout(work, gpus, gpu, per_node, shard, ep, micro, checkpointing)]
                if p.memory_total <= budget]
        if fits:
            # The largest micro-batch, without checkpointing when it fits without.
            # The global batch nearest the recipe's, then no checkpointing, then the largest micro-batch.
            return max(fits, key=lambda p: (-abs(p.global_sequences - work.global_sequences), not p.checkpointing,
                                            p.micro_batch))
    smallest = _layout(work, gpus, gpu, per_node, _shard_groups(gpus, per_node)[-1], ep, 1, True)
    state = STATE_BYTES_PER_PARAMETER * total_parameters(cfg)
    need = -(-state // (budget - smallest.memory_total + smallest.memory["weights, gradients, AdamW"]))
    nodes = -(-int(need) // per_node)
    raise LabError(
        f"{work.name} ({_count(total_parameters(cfg))} parameters) does not fit {gpus} {gpu.name}: "
        f"weights, gradients and AdamW state alone are {state / GB:,.0f} GB, {state / gpus / GB:,.0f} GB per GPU "
        f"fully sharded, and with one checkpointed sequence a GPU needs {smallest.memory_total / GB:,.0f} GB of "
        f"{budget / GB:,.0f} usable; it needs at least {nodes * per_node} GPUs ({nodes} nodes of {per_node})")


def workloads(recipe_path) -> list[Workload]:
    """The workloads of a training recipe (one) or a pipeline recipe (each stage, then its baseline)."""
    from lab.json_input import read_json
    from lab.yaml_input import read_yaml

    values = read_json(recipe_path) if str(recipe_path).endswith(".json") else read_yaml(recipe_path)
    if isinstance(values, dict) and "stages" in values:
        from lab.pipeline import load_pipeline

        pipeline = load_pipeline(values)
        found = [_workload(s.name, s.recipe, s.config) for s in pipeline.stages]
        if pipeline.baseline is not None:
            found.append(_workload("baseline (from scratch)", pipeline.baseline, pipeline.stages[-1].config))
        return found
    from lab.train import load_recipe
    from lab.train.setup import base_config

    recipe = load_recipe(values)
    return [_workload(recipe.run, recipe, base_config(recipe))]


def _workload(name: str, recipe, cfg: ModelConfig) -> Workload:
    d = recipe.data
    compute = 2 if recipe.train.precision in ("bf16", "fp16") else 4
    return Workload(name, cfg, d.seq_len, d.batch_size * d.grad_accum, compute, recipe.train.max_steps)


def _count(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,.0f}"


def describe(p: Plan) -> list[str]:
    """The plan in words, a line each."""
    w, cfg = p.workload, p.workload.config
    lines = [f"{w.name}: {_count(total_parameters(cfg))} parameters, {_count(active_parameters(cfg))} "
             f"active, sequence {w.seq_len}"]
    kind = ("one GPU, nothing sharded" if p.gpus == 1 else
            f"data parallel: the whole model on each of the {p.gpus} GPUs" if p.shard_group == 1 else
            f"FSDP2 over all {p.gpus} GPUs" if p.shard_group == p.gpus else
            f"HSDP: shard groups of {p.shard_group} GPUs, {p.replicas} replicas")
    per_gpu, holders = cfg.n_experts // p.expert_parallel, p.shard_group // p.expert_parallel
    ep = (f", expert parallel {p.expert_parallel} ({per_gpu} expert{'s' if per_gpu > 1 else ''} per GPU)"
          if p.expert_parallel > 1 else "")
    if ep and holders > 1:
        ep += f", stored sharded over the {holders} GPUs of a shard group that compute the same experts"
    lines.append(f"  layout: {kind}{ep}; micro-batch {p.micro_batch} sequence(s) per GPU, gradient accumulation "
                 f"{p.grad_accum}, activation checkpointing {'on' if p.checkpointing else 'off'}")
    if p.gpus > 1:
        lines.append(f"  train it so: {trainer_options(p)}")
    asked = w.global_sequences
    batch = f"  global batch: {p.global_sequences:,} sequences ({_count(p.global_sequences * w.seq_len)} tokens)"
    if p.global_sequences != asked:
        batch += f"; the recipe asks {asked:,}, which does not split evenly over {p.gpus} GPUs"
    lines.append(batch)
    parts = ", ".join(f"{k} {v / GB:.1f}" for k, v in p.memory.items())
    lines.append(f"  memory per GPU: {p.memory_total / GB:.1f} GB of {p.gpu.memory_gb:g} ({parts})")
    traffic = ", ".join(f"{k} {v / GB:.1f}" for k, v in p.traffic.items())
    lines.append(f"  traffic per GPU per step: {sum(p.traffic.values()) / GB:.1f} GB ({traffic})")
    lines.append(f"  time per step: compute {p.compute_s:.2f} s, communication {p.communication_s:.2f} s, "
                 f"step about {p.step_s:.2f} s; estimated MFU {100 * p.mfu:.0f}%")
    if w.steps:
        days = w.steps * p.step_s / 86400
        lines.append(f"  {w.steps:,} steps: about {days:,.1f} days")
    return lines


def trainer_options(p: Plan) -> str:
    """The `python -m lab train` options (and recipe keys) that give the trainer this plan's layout."""
    layout = {}
    if p.shard_group < p.gpus:
        layout["shard_group"] = p.shard_group
    if p.expert_parallel > 1:
        layout["expert_parallel"] = p.expert_parallel
    if not layout:
        return f"torchrun over {p.gpus} GPUs, the recipe's hardware as it is (FSDP2 over all of them)"
    options = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in layout.items())
    keys = ", ".join(f"{key}: {value}" for key, value in layout.items())
    return f"torchrun over {p.gpus} GPUs with {options} (recipe hardware: {{{keys}}})"
