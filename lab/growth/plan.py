"""What a growth run is asked to do, the target config it produces, and every check made before any work.

A `GrowthPlan` is the whole recipe of a Scale-Up (AquilaMoE 2.2.1): source and target configs, the
width method (FPI, AKI, AKI-Pro), the depth order, the growth map, symmetric noise and the seed.
`plan_growth` builds it from the requested dimensions (those not given keep the source's) and raises a
one-line `LabError` for anything it cannot do.

Attention heads keep their head_dim and grow in one of two ways:
- the GQA rule (AKI-Pro): the number of kv groups stays, q heads grow inside each group, and k/v only
  get the hidden in-dimension expansion;
- an MHA source (n_kv_heads == n_heads) that stays MHA grows its kv heads with its q heads, as
  bert2BERT does (each head one unit).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from lab.config import ModelConfig
from lab.errors import LabError, quoted
from lab.growth.depth import DEPTH_KINDS, PLACEMENTS
from lab.growth.maps import MAP_KINDS
from lab.msg_masks import MSG_MASKS

METHODS = ("fpi", "aki", "aki-pro", "msg")
MSG_RAMP_STEPS = 100  # msg's default: training steps over which the masks of the new units ramp from 0 to 1


@dataclass(frozen=True)
class GrowthPlan:
    """A validated growth: `source` -> `target` by `method`, layers ordered by `depth`.

    `noise` is the std of the symmetric noise relative to the std of each split weight (0: none).
    """

    source: ModelConfig
    target: ModelConfig
    method: str = "fpi"
    depth: str = "stack"
    map: str = "cyclic"
    noise: float = 0.0
    seed: int = 0
    placement: str = "first"  # identity blocks after the first or the last layer of their group
    ramp_steps: int = 0  # msg only: steps over which the masks ramp from 0 to 1 (lab.msg_masks)

    @property
    def grouped_heads(self) -> bool:
        """True when q heads grow inside kv groups (the kv heads are kept), False when kv heads grow with them."""
        return self.target.n_kv_heads == self.source.n_kv_heads

    @property
    def is_exact(self) -> bool:
        """Whether the grown model computes exactly what the source computes (before any noise, which is
        zero-sum and keeps it): FPI, a hidden size kept or grown by an integer ratio with the cyclic map
        (RMSNorm sees every unit the same number of times), and no layer added other than identity
        blocks. The intermediate size and the heads may grow to any size: no norm reads them. MSG is exact
        for any growth it accepts, at mask 0 (lab.growth.msg)."""
        s, t = self.source, self.target
        hidden_ok = t.dim == s.dim or (t.dim % s.dim == 0 and self.map == "cyclic")
        depth_ok = t.n_layers == s.n_layers or self.depth == "identity"
        return self.method == "msg" or (self.method == "fpi" and hidden_ok and depth_ok)


def _check_not_smaller(source: ModelConfig, sizes: dict[str, tuple[str, int]]) -> None:
    for field, (flag, value) in sizes.items():
        old = getattr(source, field)
        if value < old:
            raise LabError(f"{flag} {value} is smaller than the source's {old} (growth only adds units)")


def _kv_heads(source: ModelConfig, n_heads: int, n_kv_heads: int | None) -> int:
    """The target's kv heads: kept for GQA, grown with the heads for MHA; a change of groups is refused."""
    source_is_mha = source.n_kv_heads == source.n_heads
    if n_kv_heads is None:
        return n_heads if source_is_mha else source.n_kv_heads
    allowed = {source.n_kv_heads} | ({n_heads} if source_is_mha else set())
    if n_kv_heads not in allowed:
        how = (f"keep --num-kv-heads {source.n_kv_heads} (q heads grow inside each group) or grow them with "
               f"the heads to {n_heads} (MHA)" if source_is_mha else
               f"keep --num-kv-heads {source.n_kv_heads}: q heads grow inside each group")
        raise LabError(f"--num-kv-heads {n_kv_heads} changes the source's {source.n_kv_heads} kv groups; {how}")
    return n_kv_heads


def half_again_deeper(n_layers: int) -> int:
    """The lab's default target depth for its experiments and pages: half again as many layers, at least
    one more (8 -> 12, 4 -> 6, 1 -> 2). (The paper's Scale-Up adds a quarter, 32 -> 40.)"""
    return n_layers + max(1, n_layers // 2)


def plan_growth(source: ModelConfig, *, method: str = "fpi", dim: int | None = None, ffn_dim: int | None = None,
                n_layers: int | None = None, n_heads: int | None = None, n_kv_heads: int | None = None,
                depth: str | None = None, map: str = "cyclic", noise: float = 0.0, seed: int = 0,
                placement: str = "first", ramp_steps: int | None = None) -> GrowthPlan:
    """The plan that grows `source` to the requested dimensions (None keeps the source's), after every check.

    `depth` defaults to "interpolate" for aki-pro (the paper's choice) and to "stack" otherwise
    (bert2BERT's). A tied-embedding source is untied, with a warning. `ramp_steps` (msg only, default
    MSG_RAMP_STEPS) is how many training steps MSG's masks take to ramp from 0 to 1.
    """
    if method not in METHODS:
        raise LabError(f"--method {method!r}: must be one of {', '.join(METHODS)}")
    depth = depth or ("interpolate" if method == "aki-pro" else "stack")
    if depth not in DEPTH_KINDS:
        raise LabError(f"--depth {depth!r}: must be one of {', '.join(DEPTH_KINDS)}")
    if placement not in PLACEMENTS:
        raise LabError(f"--placement {placement!r}: must be one of {', '.join(PLACEMENTS)}")
    if placement != "first" and depth != "identity":
        raise LabError(f"--placement {placement} places identity blocks: it needs --depth identity, not {depth}")
    if map not in MAP_KINDS:
        raise LabError(f"--map {map!r}: must be one of {', '.join(MAP_KINDS)}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise LabError(f"--noise must be a finite number >= 0, got {quoted(noise)}")
    if method == "msg" and noise:
        raise LabError(f"--noise {noise:g}: msg copies nothing, so there is no symmetry to break (its new weights are "
                       "random)")
    if method == "msg" and map != "cyclic":
        raise LabError(f"--map {map}: msg copies nothing, so there is no map to draw (new units are appended)")
    if method != "msg" and ramp_steps is not None:
        raise LabError(f"--ramp-steps ramps MSG's masks: it needs --method msg, not {method}")
    ramp_steps = MSG_RAMP_STEPS if ramp_steps is None and method == "msg" else ramp_steps or 0
    if method == "msg" and (isinstance(ramp_steps, bool) or not isinstance(ramp_steps, int) or ramp_steps < 1):
        raise LabError(f"--ramp-steps must be a positive integer, got {quoted(ramp_steps)}")
    if source.extra.get(MSG_MASKS) is not None:
        raise LabError("the source is on a masked-growth ramp (config.json msg_masks): train it past the ramp's "
                       "end first, where the masks fold into the weights")
    if source.is_moe:
        raise LabError(f"the source is a Mixture of Experts ({source.n_experts} experts); grow a dense "
                       "checkpoint, then upcycle it")
    dim, ffn_dim = dim or source.dim, ffn_dim or source.ffn_dim
    n_layers, n_heads = n_layers or source.n_layers, n_heads or source.n_heads
    _check_not_smaller(source, {"dim": ("--hidden-size", dim), "ffn_dim": ("--intermediate-size", ffn_dim),
                                "n_layers": ("--num-layers", n_layers), "n_heads": ("--num-heads", n_heads)})
    hd = source.head_dim
    # A source whose hidden size is heads x head_dim keeps that shape (head_dim never changes).
    if source.dim == source.n_heads * hd and dim != n_heads * hd:
        raise LabError(f"--hidden-size {dim} is not --num-heads {n_heads} x head_dim {hd} = {n_heads * hd} "
                       f"(head_dim is kept{'; give --num-heads ' + str(dim // hd) if dim % hd == 0 else ''})")
    if n_kv_heads is not None and n_heads % n_kv_heads:
        raise LabError(f"--num-heads {n_heads} is not divisible by --num-kv-heads {n_kv_heads}")
    kv = _kv_heads(source, n_heads, n_kv_heads)
    if n_heads % kv:
        raise LabError(f"--num-heads {n_heads} is not divisible by the {kv} kv heads the source's "
                       f"groups keep (q heads grow inside each group)")
    if method == "aki" and (source.n_kv_heads != source.n_heads or kv != n_heads):
        raise LabError(f"--method aki supports multi-head attention only (the "
                       f"{'source' if source.n_kv_heads != source.n_heads else 'target'} has {kv} kv groups); "
                       "use --method aki-pro, which grows q heads inside each kv group")
    if source.tie_embeddings:
        warnings.warn("the source ties its embeddings; the grown model unties them (the embedding's "
                      "hidden dimension is copied, the LM head's is split)", stacklevel=2)
    try:
        target = source.replace(dim=dim, ffn_dim=ffn_dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=kv,
                                head_dim=hd, tie_embeddings=False)
    except ValueError as e:
        raise LabError(str(e)) from None
    return GrowthPlan(source, target, method, depth, map, float(noise), seed, placement, ramp_steps)
