"""Visible tests of assignment 01_fpi: each question against the lab's operators and FPI's invariants."""

import copy

import torch

from lab.grading import check_close, check_equal, question
from lab.growth import GrowthMap, fpi_in, fpi_out, grouped_map, growth_map
from lab.mlp import MLP
from lab.model import Attention, rope_inv_freq, rope_tables
from lab.config import ModelConfig

# The lab's own growth operators are the answers: the student's process cannot import them.
OFF_LIMITS = ["lab.growth", "lab.derive"]


def as_map(g: list[int], old: int) -> GrowthMap:
    """The lab's GrowthMap of an explicit list of old indices."""
    index = torch.tensor(g)
    return GrowthMap(index, torch.arange(len(g)) >= old, old)


def check_map(student, old: int, new: int) -> None:
    g = student.growth_map(old, new)
    assert isinstance(g, torch.Tensor), f"growth_map({old}, {new}) should return a tensor, got {type(g).__name__}"
    assert g.dtype == torch.int64, f"growth_map({old}, {new}) should be int64 (indices), got {g.dtype}"
    check_equal(g, growth_map(old, new).index, f"growth_map({old}, {new})")


@question(points=1)
def q1_growth_map(student):
    """growth_map: the cyclic map g(i) = i mod old"""
    for old, new in ((3, 7), (4, 8), (5, 5)):
        check_map(student, old, new)


@question(points=2)
def q2_fpi_out(student):
    """fpi_out: rows copied by the map"""
    w = torch.randn(3, 5)
    for g in ([0, 1, 2, 0, 1, 2, 0], [0, 1, 2, 0, 0]):
        check_close(student.fpi_out(w, torch.tensor(g)), fpi_out(w, as_map(g, 3), dim=0), f"fpi_out(w (3, 5), g={g})")
    bias = torch.randn(3)
    check_close(student.fpi_out(bias, torch.tensor([0, 1, 2, 1])), bias[[0, 1, 2, 1]], "fpi_out of a bias (3,)")


@question(points=3)
def q3_fpi_in(student):
    """fpi_in: columns split by their number of copies"""
    w = torch.randn(4, 3)
    for g in ([0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 0]):
        index = torch.tensor(g)
        grown = student.fpi_in(w, index)
        check_close(grown, fpi_in(w, as_map(g, 3), dim=1), f"fpi_in(w (4, 3), g={g})")
        x = torch.randn(3)
        check_close(grown @ x[index], w @ x, f"invariant W' x' = W x with g={g} (x' copies x)")


@question(points=4)
def q4_grow_mlp(student):
    """grow_mlp: a grown SwiGLU MLP computes the same function"""
    mlp = MLP(8, 12)
    before = copy.deepcopy(mlp.state_dict())
    dim_map, ffn_map = growth_map(8, 16).index, growth_map(12, 20).index
    grown = student.grow_mlp(mlp, dim_map, ffn_map)
    assert isinstance(grown, MLP), f"grow_mlp should return an MLP, got {type(grown).__name__}"
    for name, shape in (("gate_proj", (20, 16)), ("up_proj", (20, 16)), ("down_proj", (16, 20))):
        got = tuple(getattr(grown, name).weight.shape)
        assert got == shape, f"grown {name}.weight should have shape {shape}, got {got}"
    for name, value in mlp.state_dict().items():
        assert torch.equal(value, before[name]), f"grow_mlp changed the source MLP's {name}: return a new MLP"
    x = torch.randn(3, 8)
    with torch.no_grad():
        check_close(grown(x[:, dim_map]), mlp(x)[:, dim_map], "invariant new_mlp(x[..., dim_map]) = mlp(x)[..., dim_map]")


@question(points=2)
def q5_grouped_head_map(student):
    """grouped_head_map: query heads grow inside their kv group"""
    for groups, old, new in ((2, 2, 3), (1, 4, 6), (4, 1, 2)):
        got = student.grouped_head_map(groups, old, new)
        assert isinstance(got, torch.Tensor), f"grouped_head_map should return a tensor, got {type(got).__name__}"
        check_equal(got, grouped_map(groups, old, new).index, f"grouped_head_map({groups}, {old}, {new})")


def attention(dim, n_heads, n_kv_heads, head_dim, qkv_bias) -> Attention:
    cfg = ModelConfig(vocab_size=1, dim=dim, n_layers=1, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      head_dim=head_dim, ffn_dim=1, qkv_bias=qkv_bias)
    attn = Attention(cfg, layer=0)
    with torch.no_grad():
        for p in attn.parameters():  # biases too: a forgotten bias must show
            p.normal_(0.0, 0.3)
    return attn


def check_attention_growth(student, dim, n_heads, n_kv_heads, head_dim, qkv_bias, new_n_heads) -> None:
    attn = attention(dim, n_heads, n_kv_heads, head_dim, qkv_bias)
    what = f"grow_attention({n_heads} -> {new_n_heads} heads, {n_kv_heads} kv heads, bias={qkv_bias})"
    grown = student.grow_attention(attn, new_n_heads)
    assert isinstance(grown, Attention), f"{what} should return an Attention, got {type(grown).__name__}"
    assert (grown.n_heads, grown.n_kv_heads) == (new_n_heads, n_kv_heads), (
        f"{what}: expected {new_n_heads} heads and {n_kv_heads} kv heads, got {grown.n_heads} and {grown.n_kv_heads}")
    check_close(grown.k_proj.weight, attn.k_proj.weight, f"{what}: k_proj (unchanged under the GQA rule)")
    check_close(grown.v_proj.weight, attn.v_proj.weight, f"{what}: v_proj (unchanged under the GQA rule)")
    T = 6
    x = torch.randn(2, T, dim)
    cos, sin = rope_tables(torch.arange(T), rope_inv_freq(head_dim, 10000.0), x.dtype)
    with torch.no_grad():
        check_close(grown(x, cos, sin), attn(x, cos, sin), f"{what}: invariant grown(x) = attn(x)", atol=1e-5, rtol=1e-4)


@question(points=4)
def q6_grow_attention(student):
    """grow_attention: more query heads, same function (GQA)"""
    check_attention_growth(student, dim=32, n_heads=4, n_kv_heads=2, head_dim=8, qkv_bias=True, new_n_heads=6)


@question(points=1)
def q7_width_growth_is_exact(student):
    """width_growth_is_exact: the integer-ratio rule"""
    for old, new, expected in ((64, 128, True), (64, 96, False), (64, 64, True), (4096, 5120, False)):
        got = student.width_growth_is_exact(old, new)
        assert got == expected, f"width_growth_is_exact({old}, {new}) should be {expected}, got {got}"
