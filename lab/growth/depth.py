"""Depth growth: which source layer each layer of the deeper model copies.

- stack (StackBERT, Gong et al. 2019; used by bert2BERT): new layer l copies old layer l mod L1, so
  the source is repeated on top of itself (3 -> 6 layers: 0,1,2,0,1,2).
- interpolate (Pan et al. 2024, "Preparing Lessons for Progressive Training"; AquilaMoE's AKI-Pro):
  new layer l copies old layer floor(l * L1 / L2), so each layer is repeated in place
  (3 -> 6: 0,0,1,1,2,2). The paper's Eq. 3 is misprinted; this is what its Figure 2 shows.
- identity (block expansion with identity blocks): each inserted block is a copy of a source layer
  with its o and down projections zeroed, so it adds nothing to the residual stream and the deeper
  model computes exactly what the source computes, whatever copies are placed where. The source layers
  are cut into as many contiguous groups as there are new blocks; `placement` says which layer of a
  group the new block copies and follows: "first" (the interpolation order, 4 -> 6: 0,0',1,2,2',3) or
  "last", LLaMA-Pro's (Wu et al. 2024, arXiv 2401.02415: a copy of each group's last block appended to
  the group, 4 -> 6: 0,1,1',2,3,3').

Neither stacking nor interpolation preserves the function: the output space of a layer does not
match the input space expected by the layer placed after it.
"""

from __future__ import annotations

DEPTH_KINDS = ("stack", "interpolate", "identity")
PLACEMENTS = ("first", "last")  # of identity blocks in their group (LLaMA-Pro's is "last")
# The projections that write into the residual stream: zero them and a block is the identity.
RESIDUAL_WRITERS = ("attn.o_proj.weight", "mlp.down_proj.weight")


def layer_order(old_layers: int, new_layers: int, kind: str = "interpolate", placement: str = "first") -> list[int]:
    """The source layer of each of the `new_layers` layers (new_layers >= old_layers); `placement` (identity
    only) puts each inserted copy after the first or the last layer of its group."""
    if new_layers < old_layers:
        raise ValueError(f"depth growth cannot shrink {old_layers} layers to {new_layers}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r} (known: {', '.join(PLACEMENTS)})")
    if placement == "last" and kind != "identity":
        raise ValueError(f"placement 'last' places identity blocks; depth {kind!r} has none")
    if kind == "stack":
        return [l % old_layers for l in range(new_layers)]
    if kind in ("interpolate", "identity"):
        order = [l * old_layers // new_layers for l in range(new_layers)]
        if placement == "last":  # the same groups read from the other end: each copy follows its group's last
            order = [old_layers - 1 - source for source in reversed(order)]
        return order
    raise ValueError(f"unknown depth growth {kind!r} (known: {', '.join(DEPTH_KINDS)})")


def inserted_copies(order: list[int]) -> set[int]:
    """The new layers that repeat a source layer already placed earlier (its second, third... copy)."""
    seen, inserted = set(), set()
    for l, source in enumerate(order):
        if source in seen:
            inserted.add(l)
        seen.add(source)
    return inserted
