"""Hidden tests of assignment 01_fpi: other shapes, maps that copy units unequally often, MHA and no bias."""

import runpy
from pathlib import Path

import torch

from lab.grading import check_close, question
from lab.growth import growth_map
from lab.mlp import MLP

VISIBILITY = "hidden"

# The visible tests' helpers (the hidden tests stay with the solutions, the helpers are shared).
_visible = runpy.run_path(str(Path(__file__).resolve().parents[2] / "tests" / "01_fpi.py"))
as_map, check_map, check_attention_growth = _visible["as_map"], _visible["check_map"], _visible["check_attention_growth"]


@question(points=1)
def h1_growth_map_edges(student):
    """growth_map: one unit, and a large ratio"""
    for old, new in ((1, 4), (2, 9)):
        check_map(student, old, new)


@question(points=2)
def h2_fpi_in_unequal(student):
    """fpi_in: units copied unequally often"""
    w = torch.randn(5, 2)
    g = [0, 1, 1, 1, 0, 1, 1]
    index = torch.tensor(g)
    x = torch.randn(2)
    check_close(student.fpi_in(w, index) @ x[index], w @ x, f"invariant W' x' = W x with g={g}")


@question(points=2)
def h3_grow_mlp_unequal(student):
    """grow_mlp: unequal maps keep the MLP's function"""
    mlp = MLP(6, 10)
    dim_map = torch.tensor([0, 1, 2, 3, 4, 5, 3, 3, 5])
    ffn_map = torch.cat([torch.arange(10), torch.tensor([7, 7, 2, 9, 0])])
    x = torch.randn(4, 6)
    with torch.no_grad():
        check_close(student.grow_mlp(mlp, dim_map, ffn_map)(x[:, dim_map]), mlp(x)[:, dim_map],
                    "invariant new_mlp(x[..., dim_map]) = mlp(x)[..., dim_map] with unequal maps")


@question(points=2)
def h4_grow_attention_mha_no_bias(student):
    """grow_attention: MHA source without q/k/v bias"""
    check_attention_growth(student, dim=24, n_heads=3, n_kv_heads=3, head_dim=8, qkv_bias=False, new_n_heads=6)


@question(points=2)
def h5_grow_attention_one_group(student):
    """grow_attention: one kv group, a non-integer head ratio"""
    check_attention_growth(student, dim=16, n_heads=2, n_kv_heads=1, head_dim=8, qkv_bias=True, new_n_heads=5)


@question(points=1)
def h6_width_growth_other_ratios(student):
    """width_growth_is_exact: ratios other than the handout's 1 and 2"""
    for old, new, expected in ((32, 96, True), (10, 40, True), (7, 49, True), (40, 60, False), (48, 80, False),
                               (64, 192, True), (100, 250, False)):
        got = student.width_growth_is_exact(old, new)
        assert got == expected, f"width_growth_is_exact({old}, {new}) should be {expected}, got {got}"
