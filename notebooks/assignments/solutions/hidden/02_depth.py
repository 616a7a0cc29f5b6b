"""Hidden tests of assignment 02_depth: other depths, a model with q/k/v biases, uneven growth."""

import runpy
from pathlib import Path

import torch

from lab.grading import check_close, question
from lab.growth import layer_order

VISIBILITY = "hidden"

# The visible tests' helpers (the hidden tests stay with the solutions, the helpers are shared).
_visible = runpy.run_path(str(Path(__file__).resolve().parents[2] / "tests" / "02_depth.py"))
tiny_model, tokens, check_order, check_layers_copied = (
    _visible["tiny_model"], _visible["tokens"], _visible["check_order"], _visible["check_layers_copied"])


@question(points=1)
def h1_orders_uneven(student):
    """stack_order and interpolate_order: one source layer, uneven ratios"""
    for old, new in ((1, 4), (5, 8), (3, 10)):
        check_order(student, "stack_order", "stack", old, new)
        check_order(student, "interpolate_order", "interpolate", old, new)


@question(points=2)
def h2_grow_depth_bias(student):
    """grow_depth: a model with q/k/v biases, stacked 2 -> 6"""
    model = tiny_model(2)
    biased = type(model)(model.config.replace(qkv_bias=True))
    with torch.no_grad():
        for p in biased.parameters():
            p.normal_(0.0, 0.3)
    order = layer_order(2, 6, "stack")
    check_layers_copied(student.grow_depth(biased, order), biased, order, f"grow_depth(2 layers with bias, {order})")


@question(points=2)
def h3_identity_growth_uneven(student):
    """identity_growth: 3 -> 7 layers keeps the logits"""
    model = tiny_model(3, seed=5)
    ids = tokens(n=3, length=10, seed=7)
    with torch.no_grad():
        check_close(student.identity_growth(model, 7).eval()(ids).logits, model(ids).logits,
                    "invariant: identity growth 3 -> 7 keeps the logits", atol=1e-5, rtol=1e-4)


@question(points=2)
def h4_grow_depth_cached_generation(student):
    """grow_depth: the grown model generates the same with a KV cache as without"""
    model = tiny_model(2, seed=3)
    order = [0, 0, 1, 1]
    grown = student.grow_depth(model, order)
    ids = tokens(n=2, length=6, seed=11)
    with torch.no_grad():
        full = grown.eval()(ids).logits
        cache = grown.new_cache(ids.shape[0], ids.shape[1])
        step_by_step = torch.cat([grown(ids[:, t:t + 1], cache=cache).logits for t in range(ids.shape[1])], dim=1)
    layers = [block.attn.layer for block in grown.layers]
    hint = "" if layers == list(range(len(order))) else (
        f" (each layer's attn.layer, its index in the KV cache, is {layers}: layer l must have l)")
    check_close(step_by_step, full, f"logits generated token by token with a KV cache{hint}", atol=1e-5, rtol=1e-4)
