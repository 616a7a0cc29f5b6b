"""How alike the layers of a trained model are: why a layer's neighbour is a good initialiser for it.

Depth growth fills a new layer with a copy of an old one. Interpolation (Pan et al. 2024; AquilaMoE's
AKI-Pro) puts the copy of layer l right after layer l, stacking (StackBERT) puts it after the last
layer. Two measurements show why the neighbour is the better guess:

- `weight_similarity`: cosine similarity of two layers' weights, projection by projection, averaged;
- `substitution_losses`: the model's validation loss when layer i computes with layer j's weights
  (everything else unchanged). The diagonal is the model itself; a small loss off the diagonal says
  that layer j can stand in for layer i.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


def block_weights(model, layer: int) -> dict[str, torch.Tensor]:
    """The matrices of one block by short name (attn.q_proj.weight, mlp.up_proj.weight, ...), fp32."""
    return {name: p.detach().float() for name, p in model.layers[layer].named_parameters() if p.ndim == 2}


def weight_similarity(model) -> torch.Tensor:
    """(L, L): mean over a block's matrices of the cosine similarity between layer i's and layer j's."""
    blocks = [block_weights(model, l) for l in range(len(model.layers))]
    L = len(blocks)
    out = torch.zeros(L, L)
    for i in range(L):
        for j in range(L):
            sims = [F.cosine_similarity(blocks[i][n].flatten(), blocks[j][n].flatten(), dim=0) for n in blocks[i]]
            out[i, j] = torch.stack(sims).mean()
    return out


@torch.no_grad()
def substitution_losses(model, tokens: torch.Tensor) -> torch.Tensor:
    """(L, L): LM loss on `tokens` (n, T) when block i is replaced by a copy of block j (i = row)."""
    L = len(model.layers)
    out = torch.zeros(L, L)
    probe = copy.deepcopy(model).eval()
    originals = [copy.deepcopy(block.state_dict()) for block in model.layers]
    for i in range(L):
        for j in range(L):
            probe.layers[i].load_state_dict(originals[j])
            out[i, j] = probe(tokens, labels=tokens).lm_loss
        probe.layers[i].load_state_dict(originals[i])
    return out
