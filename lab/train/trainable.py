"""What a run trains (`train.trainable`): every parameter, or only the blocks depth growth inserted.

`new-blocks` is LLaMA-Pro's block expansion training (Wu et al. 2024, arXiv 2401.02415): identity blocks
are inserted into a trained model and only they are trained; the original blocks stay frozen, and so do
the embeddings and the LM head, so that what the source knew is kept while the new blocks learn from the
new data. Here the final norm is frozen too: everything outside the new blocks keeps its value. The new blocks are the decoder layers the starting checkpoint records as inserted
(config.json's `inserted_layers`, written by `lab.derive`'s growth for any depth kind, kept by training).

Frozen parameters get `requires_grad=False` before the model is placed (FSDP2 shards them too, and
reduces no gradient for them), and the optimizer is given only what trains (`lab.train.setup.adamw`), so
it holds no state for the rest and neither steps nor decays it. Frozen parameters have no gradient, so
clipping and the logged grad_norm see the trained parameters only. Invariant: with `new-blocks`, every
frozen parameter is bit-identical after training.
"""

from __future__ import annotations

from torch import nn

from lab.checkpoint.hf_config import INSERTED_LAYERS
from lab.config import ModelConfig
from lab.errors import RecipeError


def trained_layers(recipe, cfg: ModelConfig) -> tuple[int, ...] | None:
    """The decoder layers `recipe` (a lab.train.Recipe) trains in a model of config `cfg` (the one it starts
    from); None: every parameter. A RecipeError naming `train.trainable` when there are no new blocks."""
    if recipe.train.trainable == "all":
        return None
    if recipe.init_from is None:
        raise RecipeError("train.trainable", "new-blocks trains the blocks depth growth inserted, and a run from "
                                             "scratch has none; start from a grown checkpoint (init_from or --init)")
    layers = cfg.extra.get(INSERTED_LAYERS)
    if not layers:
        raise RecipeError("train.trainable", f"new-blocks: {recipe.init_from} records no blocks inserted by depth "
                                             f"growth (no {INSERTED_LAYERS} in its config.json); grow it with "
                                             "`python -m lab grow --num-layers N --depth identity`, or train all")
    return tuple(layers)


def freeze_all_but(model: nn.Module, layers: tuple[int, ...]) -> int:
    """Freeze (requires_grad=False) every parameter of `model` outside the decoder `layers`; returns the
    number of parameters left to train."""
    prefixes = tuple(f"layers.{layer}." for layer in layers)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
    return trained_parameters(model)


def trained_parameters(model: nn.Module) -> int:
    """How many parameters of `model` train (those that require a gradient)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
