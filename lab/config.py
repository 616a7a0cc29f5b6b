"""One typed configuration for the lab's decoder, dense and MoE.

The vocabulary is the lab's own (`dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, n_experts,
top_k`); Hugging Face names appear only in `lab.checkpoint.hf_config`, where checkpoints are read and
written. Every behaviour of the model is a field here, never a check on a model's name.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from lab.errors import quoted

ROUTINGS = ("topk_softmax", "softmax_topk")
# RoPE frequency scalings, with the keys each one needs (besides "rope_type").
ROPE_SCALINGS = {
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
MOE_DISPATCHES = ("grouped", "reference")
# How the MoE layers' auxiliary losses (load balancing and z-loss) become one term of the training loss.
ROUTER_LOSS_AGGREGATIONS = ("mean", "sum")
# How the experts' load is balanced: the load-balancing loss, a routing bias (aux-loss-free), or nothing.
BALANCES = ("aux_loss", "aux_free", "none")
DTYPES = ("float32", "bfloat16", "float16")


_INT_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "max_seq_len",
               "sliding_window", "n_experts", "top_k", "moe_ffn_dim", "shared_expert_ffn_dim")
_OPTIONAL_FIELDS = ("n_kv_heads", "head_dim", "sliding_window", "moe_ffn_dim")
_FLOAT_FIELDS = ("rope_theta", "norm_eps", "aux_loss_coef", "z_loss_coef", "balance_bias_rate")
_LARGEST_SIZE = 2**31 - 1
_LARGEST = {"n_layers": 4096, "n_experts": 65536}
_BOOL_FIELDS = ("qkv_bias", "tie_embeddings")
_STR_FIELDS = ("dtype", "routing", "router_loss_aggregation", "moe_dispatch", "balance")


def dtype_name(dtype) -> str:
    """A torch dtype as ModelConfig.dtype names it ("float32", "bfloat16", "float16"): the one conversion,
    so that a config always says what its weights are."""
    return str(dtype).removeprefix("torch.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ModelConfig:
    """Shape and behaviour of an Aquila-style decoder (Llama layout with optional q/k/v bias).

    Dense fields describe every model; the MoE fields matter only when `n_experts > 0`.

    Derived fields are filled in `__post_init__`: `n_kv_heads` defaults to `n_heads` (MHA), `head_dim`
    to `dim // n_heads`, `moe_ffn_dim` to `ffn_dim`, and `moe_layers` to every layer of an MoE.
    """

    vocab_size: int = 4096
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int | None = None
    head_dim: int | None = None
    ffn_dim: int = 688
    qkv_bias: bool = True
    rope_theta: float = 10000.0
    # None for plain RoPE, or {"rope_type": "linear" | "llama3", ...} (Llama 3.1's long-context scaling).
    rope_scaling: dict[str, Any] | None = None
    norm_eps: float = 1e-6
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    # Attention looks back at most this many positions (Mistral); None means full causal attention.
    sliding_window: int | None = None
    # Storage dtype of the weights; the checkpoint's dtype is kept when a model is loaded.
    dtype: str = "float32"

    # --- Mixture of Experts (a dense model has n_experts == 0) ---
    n_experts: int = 0
    top_k: int = 2
    # "topk_softmax": Mixtral's softmax, top-k, renormalise (chosen weights sum to 1).
    # "softmax_topk": softmax, top-k, no renormalisation (Qwen2-MoE with norm_topk_prob=False).
    routing: str = "topk_softmax"
    # Intermediate size of each routed expert; defaults to ffn_dim (sparse upcycling copies the MLP).
    moe_ffn_dim: int | None = None
    # Intermediate size of the always-on shared expert (Qwen2-MoE); 0 means none.
    shared_expert_ffn_dim: int = 0
    # Which layers hold an MoE block; None means all of them. The others keep a dense MLP of ffn_dim.
    moe_layers: tuple[int, ...] | None = None
    aux_loss_coef: float = 0.001
    z_loss_coef: float = 0.01
    # "sum": every MoE layer adds coef * its own loss (Megatron-Core, hence AquilaMoE's recipe); "mean": the
    # layers' losses are averaged first, so a model of n MoE layers gets 1/n of that pressure. "mean" is
    # the default because configs and checkpoints written before this field existed were trained so.
    router_loss_aggregation: str = "mean"
    # How the experts' load is kept even (lab.moe): "aux_loss" adds aux_loss_coef x the load-balancing loss
    # to the training loss (Switch Transformers; the default, what every earlier config means); "aux_free"
    # adds a per-expert bias to the router's probabilities for choosing the top-k only, moved by
    # balance_bias_rate x sign(mean load - load) after every optimizer step (DeepSeek-V3, arXiv 2412.19437;
    # Wang et al. 2024, arXiv 2408.15664), and no load-balancing loss; "none" does neither. The load-balancing
    # loss is still computed and reported under all three; the z-loss applies under all three.
    balance: str = "aux_loss"
    balance_bias_rate: float = 0.001
    # How tokens reach experts: "grouped" (sorted by expert, grouped matmul) or "reference" (a plain
    # loop over experts, the readable version the grouped path is tested against).
    moe_dispatch: str = "grouped"

    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_types()  # before the derived fields compute with them
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.head_dim is None and self.n_heads > 0:
            self.head_dim = self.dim // self.n_heads
        if self.moe_ffn_dim is None:
            self.moe_ffn_dim = self.ffn_dim
        if self.n_experts > 0 and self.moe_layers is None:
            self.moe_layers = tuple(range(self.n_layers))
        if self.moe_layers is not None:
            self.moe_layers = tuple(sorted(int(i) for i in self.moe_layers))
        self.validate()

    # ------------------------------------------------------------------ validation
    def _check_types(self) -> None:
        """Raise ValueError naming the field when a value has the wrong type (a string where a number
        belongs, a bool for a size, an infinite float), so that no later comparison meets it."""

        def fail(name: str, rule: str) -> None:
            raise ValueError(f"ModelConfig.{name}={quoted(getattr(self, name))}: {rule}")

        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not (value is None and name in _OPTIONAL_FIELDS) and not _is_int(value):
                fail(name, "must be an integer")
            # Sizes far beyond any model would cost minutes or gigabytes before any check could fail.
            if value is not None and value > _LARGEST.get(name, _LARGEST_SIZE):
                fail(name, f"must be at most {_LARGEST.get(name, _LARGEST_SIZE)}")
        for name in _FLOAT_FIELDS:
            if not _is_finite_number(getattr(self, name)):
                fail(name, "must be a finite number")
        for name in _BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be true or false")
        for name in _STR_FIELDS:
            if not isinstance(getattr(self, name), str):
                fail(name, "must be a string")
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, dict):
                fail("rope_scaling", "must be a mapping (rope_type and its parameters) or None")
            for key, value in self.rope_scaling.items():
                if key != "rope_type" and not (_is_finite_number(value) and value > 0):
                    fail("rope_scaling", f"{quoted(key)} must be a positive finite number")
        if self.moe_layers is not None:
            if not isinstance(self.moe_layers, (list, tuple)) or not all(_is_int(i) for i in self.moe_layers):
                fail("moe_layers", "must be a list of layer indices or None")

    def validate(self) -> None:
        """Raise ValueError naming the field and the rule when the config describes no possible model."""

        def require(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"ModelConfig.{name}={quoted(getattr(self, name))}: {rule}")

        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim",
                     "max_seq_len"):
            require(isinstance(getattr(self, name), int) and getattr(self, name) > 0, name,
                    "must be a positive integer")
        require(self.n_heads % self.n_kv_heads == 0, "n_kv_heads",
                f"must divide n_heads={self.n_heads} (each kv head serves a whole group of q heads)")
        require(self.head_dim % 2 == 0, "head_dim", "must be even (RoPE rotates pairs of dimensions)")
        require(self.rope_theta > 0, "rope_theta", "must be positive")
        require(self.norm_eps > 0, "norm_eps", "must be positive")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type")
            require(kind in ROPE_SCALINGS, "rope_scaling", f"rope_type must be one of {tuple(ROPE_SCALINGS)}")
            missing = [k for k in ROPE_SCALINGS[kind] if k not in self.rope_scaling]
            require(not missing, "rope_scaling", f"rope_type {kind!r} needs {', '.join(missing)}")
        require(self.sliding_window is None or self.sliding_window > 0, "sliding_window",
                "must be a positive integer or None")
        require(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}")
        require(self.n_experts >= 0, "n_experts", "must be >= 0 (0 means a dense model)")
        require(self.moe_dispatch in MOE_DISPATCHES, "moe_dispatch", f"must be one of {MOE_DISPATCHES}")
        require(self.aux_loss_coef >= 0, "aux_loss_coef", "must be >= 0")
        require(self.z_loss_coef >= 0, "z_loss_coef", "must be >= 0")
        require(self.router_loss_aggregation in ROUTER_LOSS_AGGREGATIONS, "router_loss_aggregation",
                f"must be one of {ROUTER_LOSS_AGGREGATIONS}")
        require(self.balance in BALANCES, "balance", f"must be one of {BALANCES}")
        require(self.balance_bias_rate >= 0, "balance_bias_rate", "must be >= 0")
        if self.n_experts == 0:
            require(self.moe_layers is None or len(self.moe_layers) == 0, "moe_layers",
                    "must be empty for a dense model (n_experts=0)")
            require(self.shared_expert_ffn_dim == 0, "shared_expert_ffn_dim",
                    "must be 0 for a dense model (n_experts=0)")
            return
        require(1 <= self.top_k <= self.n_experts, "top_k", f"must be in [1, n_experts={self.n_experts}]")
        require(self.routing in ROUTINGS, "routing", f"must be one of {ROUTINGS}")
        require(isinstance(self.moe_ffn_dim, int) and self.moe_ffn_dim > 0, "moe_ffn_dim",
                "must be a positive integer")
        require(self.shared_expert_ffn_dim >= 0, "shared_expert_ffn_dim", "must be >= 0 (0 means none)")
        require(all(0 <= i < self.n_layers for i in self.moe_layers), "moe_layers",
                f"every index must be in [0, n_layers={self.n_layers})")
        require(len(set(self.moe_layers)) == len(self.moe_layers), "moe_layers", "must not repeat a layer")

    # ------------------------------------------------------------------ derived
    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0 and bool(self.moe_layers)

    def is_moe_layer(self, layer: int) -> bool:
        return self.n_experts > 0 and layer in (self.moe_layers or ())

    @property
    def n_moe_layers(self) -> int:
        return len(self.moe_layers or ()) if self.n_experts > 0 else 0

    def replace(self, **changes: Any) -> "ModelConfig":
        """A validated copy with some fields changed.

        Derived fields are copied as they are: a change of `dim` keeps the old `head_dim` unless
        `head_dim` is given too.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["extra"] = dict(self.extra)
        values.update(changes)
        return ModelConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.pop("extra")
        if values["moe_layers"] is not None:
            values["moe_layers"] = list(values["moe_layers"])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """Build from a plain dict (a recipe, a notebook); an unknown key is a ValueError naming it."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(str(k) for k in set(values) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown field {quoted(unknown[0])} (known: {', '.join(sorted(known))})")
        return cls(**values)


# Fields added after runs were recorded, each with the value that reproduces what those runs computed.
FIELDS_ADDED_LATER = {"router_loss_aggregation": "mean", "tokens": None, "placement": "first",
                      "trainable": "all", "shared_experts": 0, "balance": "aux_loss", "balance_bias_rate": 0.001,
                      "domains": None}


def without_later_defaults(values: Any) -> Any:
    """`values` (nested dicts and lists, e.g. a recipe's to_dict()) without the FIELDS_ADDED_LATER keys
    that hold their original value.

    Recipe digests hash this form, so that a run begun before a field existed keeps its digest and
    still resumes, while a run that sets the field to anything else gets a digest of its own.
    """
    if isinstance(values, dict):
        return {k: without_later_defaults(v) for k, v in values.items()
                if not (k in FIELDS_ADDED_LATER and FIELDS_ADDED_LATER[k] == v)}
    if isinstance(values, (list, tuple)):
        return [without_later_defaults(v) for v in values]
    return values
