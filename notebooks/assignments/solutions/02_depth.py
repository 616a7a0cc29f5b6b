# %% [markdown]
# # Assignment 2: Depth growth by stacking and by interpolation
#
# A deeper model needs more layers than the small one has. Depth growth decides which trained layer
# each new layer copies (AquilaMoE section 2.2.1, AKI-Pro). Growing $L_1$ layers to $L_2$:
#
# - **stacking** (StackBERT, used by bert2BERT): new layer $l$ copies old layer $l \bmod L_1$, the whole
#   model repeated on top of itself. 3 to 6 layers: `0 1 2 0 1 2`.
# - **interpolation** (Pan et al. 2024, used by AKI-Pro): new layer $l$ copies old layer
#   $\lfloor l L_1 / L_2 \rfloor$, each layer repeated in place. 3 to 6 layers: `0 0 1 1 2 2`.
#
# Neither keeps the function: the layer placed after a copy expects the output of a different layer.
# In the paper (Table 1, M(24, 2048) to M(32, 4096), source loss 2.97) FPI with stacking starts at loss
# 4.30 and FPI with interpolation at 3.31. A third order does keep the function: **identity blocks**
# (block expansion; LLaMA-Pro's puts each copy after the last layer of its group instead) interpolate,
# then zero the two projections that write into the residual stream, `attn.o_proj` and `mlp.down_proj`,
# in every *inserted* copy (the second, third... copy of a layer). Such a block adds nothing: $x + 0 = x$.
#
# You will write the three orders, grow a model, write a short training loop and compare the orders
# after a few steps of continued training.
#
# **How this file is graded.** `python -m lab grade 02_depth.py` imports this file and calls your
# functions. Cells under `if __name__ == "__main__":` are experiments for you: they run in Jupyter
# (or `python 02_depth.py`) and the grader skips them. Replace every `raise NotImplementedError`.

# %%
# assignment: 02_depth
import torch

from lab.model import DecoderLM


# %% [markdown]
# ## Q1 (2 points): the stacking order

# %%
def stack_order(old_layers: int, new_layers: int) -> list[int]:
    """The source layer of each new layer when stacking: l mod old_layers."""
    return [l % old_layers for l in range(new_layers)]


# %% [markdown]
# ## Q2 (2 points): the interpolation order
# Use integer arithmetic (`//`): floating point can round $l L_1 / L_2$ the wrong way.

# %%
def interpolate_order(old_layers: int, new_layers: int) -> list[int]:
    """The source layer of each new layer when interpolating: floor(l * old_layers / new_layers)."""
    return [l * old_layers // new_layers for l in range(new_layers)]


# %% [markdown]
# ## Q3 (3 points): grow a model's depth
# Return a **new** `DecoderLM` with `len(order)` layers whose layer `l` is a copy of the source's layer
# `order[l]`; the embeddings, the final norm and the LM head are copied as they are. Parameters are
# named `layers.{l}.attn.q_proj.weight`, ... in `model.state_dict()`; `model.config.replace(n_layers=...)`
# gives the new config. Copies must not share memory with the source: training the grown model must
# leave the source unchanged.

# %%
@torch.no_grad()
def grow_depth(model: DecoderLM, order: list[int]) -> DecoderLM:
    """A new model whose layer l copies layer order[l] of `model`; everything else copied."""
    source = model.state_dict()
    state = {name: value.clone() for name, value in source.items() if not name.startswith("layers.")}
    for new, old in enumerate(order):
        prefix = f"layers.{old}."
        for name, value in source.items():
            if name.startswith(prefix):
                state[f"layers.{new}.{name[len(prefix):]}"] = value.clone()
    grown = DecoderLM(model.config.replace(n_layers=len(order)))
    grown.load_state_dict(state)
    return grown.train(model.training)


# %% [markdown]
# ## Q4 (3 points): identity blocks keep the function
# Grow to `new_layers` by interpolation, then zero `attn.o_proj.weight` and `mlp.down_proj.weight` of
# every layer that repeats a source layer already placed before it. Check that the logits do not change.

# %%
@torch.no_grad()
def identity_growth(model: DecoderLM, new_layers: int) -> DecoderLM:
    """Interpolation with the inserted copies turned into identity blocks: the same logits as `model`."""
    order = interpolate_order(model.config.n_layers, new_layers)
    grown = grow_depth(model, order)
    for l in range(1, new_layers):
        if order[l] in order[:l]:  # an inserted copy
            grown.layers[l].attn.o_proj.weight.zero_()
            grown.layers[l].mlp.down_proj.weight.zero_()
    return grown


# %% [markdown]
# ## Q5 (3 points): a short training loop
# Train `model` on each batch of `batches` in turn, one optimizer step per batch, with
# `torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)`. The loss of a
# batch of token ids is `model(batch, labels=batch).loss` (the model shifts the labels itself). Return
# the loss of every step as a Python float, measured before that step's update.

# %%
def train_steps(model: DecoderLM, batches: list[torch.Tensor], lr: float) -> list[float]:
    """Train in place, one AdamW step per batch; the losses before each step."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    losses = []
    for batch in batches:
        loss = model(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


# %% [markdown]
# ## Q6 (3 points): compare the orders after continued training
# For each of `"stack"`, `"interpolate"` and `"identity"`: grow a copy of `model` to `new_layers`,
# measure its loss on `eval_batch` with `evaluate` (given), train it with `train_steps`, and measure
# again. Return `{kind: (loss_after_growth, loss_after_training)}`.

# %%
@torch.no_grad()
def evaluate(model: DecoderLM, batch: torch.Tensor) -> float:
    """The model's loss on one batch, in eval mode (given, not graded)."""
    was_training = model.training
    loss = model.eval()(batch, labels=batch).loss.item()
    model.train(was_training)
    return loss


def compare_depth_growth(model: DecoderLM, new_layers: int, batches: list[torch.Tensor], lr: float,
                         eval_batch: torch.Tensor) -> dict[str, tuple[float, float]]:
    """{"stack" | "interpolate" | "identity": (loss right after growth, loss after training)}."""
    L = model.config.n_layers
    grown = {"stack": grow_depth(model, stack_order(L, new_layers)),
             "interpolate": grow_depth(model, interpolate_order(L, new_layers)),
             "identity": identity_growth(model, new_layers)}
    results = {}
    for kind, deeper in grown.items():
        before = evaluate(deeper, eval_batch)
        train_steps(deeper, batches, lr)
        results[kind] = (before, evaluate(deeper, eval_batch))
    return results


# %% [markdown]
# ## Experiments (not graded)
# Train a 2-layer model on the shipped corpus for a minute or two, grow it to 4 layers each way and
# continue training. Which order starts lower? Which is lower after training? Compare with the paper's Table 1
# (stacking 4.30, interpolation 3.31) and explain the difference in a few sentences.

# %%
if __name__ == "__main__":
    from lab.config import ModelConfig
    from lab.data import TrainBatches, load_tokens, validation_batches

    torch.manual_seed(0)
    train = TrainBatches(load_tokens("train"), seq_len=64, batch_size=8, seed=0)
    eval_batch = torch.cat(list(validation_batches(load_tokens("validation"), seq_len=64, max_sequences=4).values()))
    small = DecoderLM(ModelConfig(vocab_size=4096, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176,
                                  max_seq_len=64))
    losses = train_steps(small, [train.batch(step) for step in range(120)], lr=3e-3)
    print(f"source: train loss {losses[0]:.2f} -> {losses[-1]:.2f}, validation {evaluate(small, eval_batch):.3f}")

    results = compare_depth_growth(small, 4, [train.batch(step) for step in range(120, 160)], 1e-3, eval_batch)
    for kind, (before, after) in results.items():
        print(f"{kind:12s} after growth {before:.3f}   after 40 steps {after:.3f}")
