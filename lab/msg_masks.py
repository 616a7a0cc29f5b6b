"""MSG's masks on a model: buffers that scale what the units, heads, hidden dimensions and layers added by
masked structural growth contribute, ramped from 0 to 1 and then folded away (Yao et al. 2024, "Masked
Structural Growth for 2x Faster Language Model Pre-training", ICLR 2024, arXiv 2305.02869).

A model is masked when its config records a ramp (`ModelConfig.extra["msg_masks"]`, config.json's lab-only
key `msg_masks`, written by `python -m lab grow --method msg` and by every training checkpoint taken during
the ramp):

    {"ramp_steps": R, "step": s, "dim": D, "ffn_dim": F, "new_heads": [...], "new_layers": [...]}

`dim` and `ffn_dim` are the source's sizes (hidden and intermediate units at index >= them are new),
`new_heads` the new q heads, `new_layers` the new decoder layers. Every mask is 1 on the source's units
and c = min(1, s / R) on the new ones, so the mask is a function of the training step and a resumed run
gets the same masks. The buffers (`msg_mask`, never in the state dict):

| module            | mask              | applied to                                                      |
|-------------------|-------------------|-----------------------------------------------------------------|
| DecoderLM         | hidden (D',)      | the embedding's output                                          |
| Block             | hidden x layer    | what attention and the MLP add to the residual stream          |
| RMSNorm           | hidden (D',)      | the mean square: taken over the masked width, sum(mask) units   |
| Attention         | heads (H', 1, 1)  | each head's output, before o_proj                               |
| MLP               | units (F',)       | silu(gate) * up, before down_proj                               |

Invariant: at c = 0 the new hidden dimensions of the residual stream are exactly 0, every new unit, head
and layer adds exactly 0, and RMSNorm divides by the source's width, so the model computes the source's
function whatever the new weights are (up to the float rounding of sums that now include zeros); at c = 1
every mask multiplies by 1.0 and RMSNorm's correction factor is exactly 1.0, so the masked model is bitwise
the unmasked one. `fold_masks` then multiplies each mask into the weight that reads the masked output
(o_proj's and down_proj's rows and columns, the embedding's columns) and removes the buffers: the model is
plain again and exports as an ordinary Hugging Face checkpoint. A mask below 1 folds exactly too, except
the hidden one: RMSNorm's statistics over the masked width have no plain-RMSNorm equivalent (the eps term
does not scale), so folding is refused there until the ramp ends.

RMSNorm: MSG (for LayerNorm) computes the norm's statistics over the masked vector; the lab's RMSNorm
does the same with its one statistic, mean(x^2) = sum(x^2) / sum(mask). Exact at 0 and 1; in between an
interpolation, as in the paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from lab.config import ModelConfig
from lab.errors import LabError, quoted

MSG_MASKS = "msg_masks"  # the key in ModelConfig.extra and config.json


@dataclass(frozen=True)
class MaskRamp:
    """Where an MSG-grown model is on its ramp: `step` of `ramp_steps`, and which units are new."""

    ramp_steps: int
    step: int
    dim: int
    ffn_dim: int
    new_heads: tuple[int, ...] = ()
    new_layers: tuple[int, ...] = ()

    @property
    def value(self) -> float:
        """c = min(1, step / ramp_steps): the mask of every new unit."""
        return min(1.0, self.step / self.ramp_steps)

    def at(self, step: int) -> "MaskRamp":
        return replace(self, step=step)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: object, cfg: ModelConfig) -> "MaskRamp":
        """The ramp config.json records, checked against the model's shape (a LabError names the key)."""
        def fail(key: str, rule: str) -> LabError:
            value = d.get(key) if isinstance(d, dict) else d
            return LabError(f"config.json {MSG_MASKS}{'.' + key if key else ''}: {rule}, got {quoted(value)}")

        if not isinstance(d, dict) or set(d) != {"ramp_steps", "step", "dim", "ffn_dim", "new_heads", "new_layers"}:
            raise fail("", "must map ramp_steps, step, dim, ffn_dim, new_heads and new_layers")
        ints = {k: d[k] for k in ("ramp_steps", "step", "dim", "ffn_dim")}
        for key, value in ints.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise fail(key, "must be an integer")
        if ints["ramp_steps"] < 1:
            raise fail("ramp_steps", "must be >= 1")
        if not 0 <= ints["step"] <= ints["ramp_steps"]:
            raise fail("step", f"must be in [0, {ints['ramp_steps']}]")
        for key, size in (("dim", cfg.dim), ("ffn_dim", cfg.ffn_dim)):
            if not 1 <= ints[key] <= size:
                raise fail(key, f"must be in [1, {size}]")
        lists = {}
        for key, size in (("new_heads", cfg.n_heads), ("new_layers", cfg.n_layers)):
            value = d[key]
            if (not isinstance(value, list) or len(set(value)) != len(value)
                    or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < size for i in value)):
                raise fail(key, f"must list distinct indices in [0, {size})")
            lists[key] = tuple(sorted(value))
        return cls(**ints, **lists)


def mask_ramp(cfg: ModelConfig) -> MaskRamp | None:
    """The ramp `cfg` records, or None for a plain model."""
    recorded = cfg.extra.get(MSG_MASKS)
    return None if recorded is None else MaskRamp.from_dict(recorded, cfg)


def with_ramp(cfg: ModelConfig, ramp: MaskRamp | None) -> ModelConfig:
    """A copy of `cfg` that records `ramp` (None: a plain config, the key removed)."""
    out = cfg.replace()
    out.extra.pop(MSG_MASKS, None)
    if ramp is not None:
        out.extra[MSG_MASKS] = ramp.to_dict()
    return out


def _unit_mask(n: int, new: torch.Tensor, value: float, like: torch.Tensor) -> torch.Tensor:
    """(n,) in the dtype and on the device of `like`: 1 on the source's units, `value` where `new`."""
    mask = torch.where(new, value, 1.0)
    return mask.to(dtype=like.dtype, device=like.device)


def _masks(model, ramp: MaskRamp) -> dict[torch.nn.Module, torch.Tensor]:
    """Every module's mask at the ramp's value (the table above); modules whose mask would be all ones
    by construction (no unit of theirs is new) get none."""
    cfg, c = model.config, ramp.value
    like = model.tok_embeddings.weight
    masks: dict[torch.nn.Module, torch.Tensor] = {}
    hidden = None
    if ramp.dim < cfg.dim:
        hidden = _unit_mask(cfg.dim, torch.arange(cfg.dim) >= ramp.dim, c, like)
        masks[model] = masks[model.norm] = hidden
    heads = torch.isin(torch.arange(cfg.n_heads), torch.tensor(ramp.new_heads, dtype=torch.long))
    for layer, block in enumerate(model.layers):
        if hidden is not None or layer in ramp.new_layers:
            layer_mask = hidden if hidden is not None else torch.ones(cfg.dim, dtype=like.dtype, device=like.device)
            masks[block] = layer_mask * c if layer in ramp.new_layers else layer_mask
        if hidden is not None:
            masks[block.attn_norm] = masks[block.mlp_norm] = hidden
        if ramp.new_heads:
            masks[block.attn] = _unit_mask(cfg.n_heads, heads, c, like).reshape(-1, 1, 1)
        if ramp.ffn_dim < cfg.ffn_dim:
            masks[block.mlp] = _unit_mask(cfg.ffn_dim, torch.arange(cfg.ffn_dim) >= ramp.ffn_dim, c, like)
    return masks


@torch.no_grad()
def set_masks(model, ramp: MaskRamp) -> None:
    """Give `model` the masks of `ramp` (new buffers where there were none, else written in place, so that a
    compiled block keeps reading the same tensors), and record the ramp in its config."""
    model.config = with_ramp(model.config, ramp)
    for module, mask in _masks(model, ramp).items():
        current = module.msg_mask
        if current is not None and current.shape == mask.shape and current.device == mask.device:
            current.copy_(mask)
        else:
            module.msg_mask = mask.clone()


def _rebuild_after_load(model, incompatible_keys) -> None:
    """load_state_dict(assign=True) on a model built on the meta device fills the parameters, not the masks
    (they are not in the state dict): make them again, on the parameters' device and in their dtype."""
    ramp = mask_ramp(model.config)
    if ramp is not None:
        set_masks(model, ramp)


def attach_masks(model) -> None:
    """Called by DecoderLM's constructor: the masks of the ramp the config records, if any (a plain model
    gets nothing)."""
    ramp = mask_ramp(model.config)
    if ramp is None:
        return
    if model.config.is_moe:
        raise LabError(f"config.json {MSG_MASKS}: masked growth makes dense models only")
    set_masks(model, ramp)
    model.register_load_state_dict_post_hook(_rebuild_after_load)


@torch.no_grad()
def fold_masks(model) -> None:
    """Multiply every mask into the weight that reads what it masks, remove the buffers and the config's
    record: the model computes what it computed (exactly: each weight is scaled once, and at the end of the
    ramp by 1.0) and is a plain DecoderLM. Refused while the hidden mask is below 1 (see the module's doc)."""
    ramp = mask_ramp(model.config)
    if ramp is None:
        return
    if model.msg_mask is not None and ramp.value < 1:
        raise LabError(f"the hidden-size mask is at {ramp.value:g} (step {ramp.step} of {ramp.ramp_steps}): RMSNorm's "
                       "mean over the masked width folds into the weights only at 1; train to the ramp's end")
    hd = model.config.head_dim
    if model.msg_mask is not None:
        model.tok_embeddings.weight.mul_(model.msg_mask)
    for block in model.layers:
        if block.msg_mask is not None:  # what the block writes into the residual stream: o and down rows
            block.attn.o_proj.weight.mul_(block.msg_mask[:, None])
            block.mlp.down_proj.weight.mul_(block.msg_mask[:, None])
        if block.attn.msg_mask is not None:  # each head's output: its head_dim columns of o_proj
            block.attn.o_proj.weight.mul_(block.attn.msg_mask.flatten().repeat_interleave(hd)[None, :])
        if block.mlp.msg_mask is not None:  # each intermediate unit: its column of down_proj
            block.mlp.down_proj.weight.mul_(block.mlp.msg_mask[None, :])
    for module in model.modules():
        if "msg_mask" in module._buffers:
            module.msg_mask = None
    model.config = with_ramp(model.config, None)


def ramp_to(model, step: int) -> bool:
    """Set a masked model's masks for training step `step`; at the ramp's end (mask 1) fold them away.
    Returns True when this call folded them (a plain model, or one already folded, is left alone: False)."""
    ramp = mask_ramp(model.config)
    if ramp is None:
        return False
    set_masks(model, ramp.at(min(step, ramp.ramp_steps)))
    if step < ramp.ramp_steps:
        return False
    fold_masks(model)
    return True
