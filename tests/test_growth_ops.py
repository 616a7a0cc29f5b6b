"""Growth operators as pure functions: maps, FPI/AKI per dimension, layer orders, symmetric noise."""

from __future__ import annotations

import pytest
import torch

from lab import DecoderLM, ModelConfig
from lab.derive import grow_model, grow_state_dict
from lab.errors import LabError
from lab.growth import (aki_out, fpi_in, fpi_out, grouped_map, growth_map, growth_maps, inserted_copies, layer_order,
                        plan_growth, symmetric_noise)


def random_model(seed: int = 0, **overrides) -> DecoderLM:
    """A tiny lab model with every weight random (norms near 1), so no invariant holds by accident."""
    cfg = ModelConfig(**{**dict(vocab_size=96, dim=64, n_layers=3, n_heads=4, n_kv_heads=4, ffn_dim=96,
                                qkv_bias=True), **overrides})
    torch.manual_seed(seed)
    model = DecoderLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.08 * torch.randn_like(p))
    return model


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


TOKENS = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ maps
def test_cyclic_and_random_maps():
    m = growth_map(3, 7)
    assert m.index.tolist() == [0, 1, 2, 0, 1, 2, 0] and m.counts.tolist() == [3, 2, 2]
    assert m.is_new.tolist() == [False] * 3 + [True] * 4
    r1 = growth_map(5, 12, "random", torch.Generator().manual_seed(1))
    r2 = growth_map(5, 12, "random", torch.Generator().manual_seed(1))
    assert r1.index[:5].tolist() == list(range(5))  # originals map to themselves
    assert torch.equal(r1.index, r2.index) and int(r1.index.max()) < 5  # seeded, in range


def test_grouped_map_grows_heads_inside_their_group():
    """8 q heads in 2 kv groups (4 per group) -> 10 (5 per group): new head 4 of each group copies head 0
    of the same group, so it keeps reading that group's kv head."""
    m = grouped_map(2, 4, 5)
    assert m.index.tolist() == [0, 1, 2, 3, 0, 4, 5, 6, 7, 4]
    assert m.is_new.tolist() == [False] * 4 + [True] + [False] * 4 + [True]
    rows = m.units(2)
    assert rows.index[:4].tolist() == [0, 1, 2, 3] and rows.index[8:10].tolist() == [0, 1]


# ------------------------------------------------------------------ width operators
@pytest.mark.parametrize("kind", ["cyclic", "random"])
def test_fpi_in_undoes_fpi_out(kind):
    """Whatever the map: splitting W's columns over copies of x gives W x back."""
    m = growth_map(6, 15, kind, torch.Generator().manual_seed(2))
    w, x = torch.randn(5, 6, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(fpi_in(w, m, dim=1) @ fpi_out(x, m, dim=0), w @ x)


def test_aki_out_takes_new_units_from_the_next_layer():
    m = growth_map(4, 6)
    w, w_next = torch.randn(4, 3), torch.randn(4, 3)
    out = aki_out(w, w_next, m, dim=0)
    torch.testing.assert_close(out[:4], w)
    torch.testing.assert_close(out[4:], w_next[m.index[4:]])


def test_symmetric_noise_sums_to_zero_over_copies():
    m = growth_map(4, 10)
    noise = symmetric_noise((3, 10), m, 1, 1.0, torch.Generator().manual_seed(0))
    sums = torch.zeros(3, 4).index_add_(1, m.index, noise)
    torch.testing.assert_close(sums, torch.zeros(3, 4), atol=1e-6, rtol=0)
    assert noise.abs().min() > 0


# ------------------------------------------------------------------ depth
def test_layer_orders():
    assert layer_order(3, 6, "stack") == [0, 1, 2, 0, 1, 2]
    assert layer_order(3, 6, "interpolate") == [0, 0, 1, 1, 2, 2]
    assert layer_order(2, 5, "interpolate") == [0, 0, 0, 1, 1]  # floor(l * L1 / L2)
    assert layer_order(24, 32, "interpolate") == [l * 24 // 32 for l in range(32)]
    assert layer_order(3, 4, "identity") == layer_order(3, 4, "interpolate")
    assert inserted_copies([0, 0, 1, 1, 2, 2]) == {1, 3, 5}
    assert inserted_copies([0, 1, 2, 0, 1, 2]) == {3, 4, 5}


def test_depth_growth_copies_the_ordered_layers():
    model = random_model()
    for depth in ("stack", "interpolate"):
        grown = grow_model(model, plan_growth(model.config, n_layers=5, depth=depth))
        for new, old in enumerate(layer_order(3, 5, depth)):
            for (name, p), (_, q) in zip(grown.layers[new].named_parameters(), model.layers[old].named_parameters()):
                torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


# ------------------------------------------------------------------ function preservation (lab model, fp32)
@pytest.mark.parametrize("kv", [4, 2])
def test_fpi_integer_width_keeps_the_logits(kv):
    model = random_model(n_kv_heads=kv)
    grown = grow_model(model, plan_growth(model.config, dim=128, n_heads=8, ffn_dim=192))
    assert grown.config.n_kv_heads == (8 if kv == 4 else 2)  # MHA grows its kv heads, GQA keeps its groups
    torch.testing.assert_close(logits(grown, TOKENS), logits(model, TOKENS), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ffn_dim, kind", [(97, "cyclic"), (150, "random"), (300, "random")])
def test_ffn_only_growth_to_any_size_keeps_the_logits(ffn_dim, kind):
    model = random_model(n_kv_heads=2)
    grown = grow_model(model, plan_growth(model.config, ffn_dim=ffn_dim, map=kind, seed=3))
    torch.testing.assert_close(logits(grown, TOKENS), logits(model, TOKENS), atol=1e-5, rtol=0)


def test_identity_depth_keeps_the_logits_and_stacking_does_not():
    model = random_model(n_kv_heads=2)
    exact = grow_model(model, plan_growth(model.config, dim=128, n_heads=8, n_layers=5, depth="identity"))
    torch.testing.assert_close(logits(exact, TOKENS), logits(model, TOKENS), atol=1e-5, rtol=0)
    stacked = grow_model(model, plan_growth(model.config, n_layers=5, depth="stack"))
    assert (logits(stacked, TOKENS) - logits(model, TOKENS)).abs().max() > 1e-2


def test_non_integer_hidden_ratio_is_close_not_equal():
    """RMSNorm over 96 units of which 32 are counted twice is not the source's RMS: close, not equal."""
    model = random_model()
    grown = grow_model(model, plan_growth(model.config, dim=96, n_heads=6))
    gap = (logits(grown, TOKENS) - logits(model, TOKENS)).abs().max()
    assert 1e-5 < gap < 0.5 * logits(model, TOKENS).abs().max()


def test_tied_source_is_untied_with_a_warning():
    model = random_model(tie_embeddings=True)
    with pytest.warns(UserWarning, match="unties"):
        plan = plan_growth(model.config, dim=128, n_heads=8)
    grown = grow_model(model, plan)
    assert grown.lm_head is not None and not grown.config.tie_embeddings
    torch.testing.assert_close(logits(grown, TOKENS), logits(model, TOKENS), atol=1e-5, rtol=0)


def test_symmetric_noise_keeps_the_logits_while_copies_differ():
    model = random_model(n_kv_heads=2)
    plain = grow_state_dict(model.state_dict(), plan_growth(model.config, dim=128, n_heads=8, ffn_dim=192))
    plan = plan_growth(model.config, dim=128, n_heads=8, ffn_dim=192, noise=0.5, seed=1)
    grown = grow_model(model, plan)
    torch.testing.assert_close(logits(grown, TOKENS), logits(model, TOKENS), atol=1e-5, rtol=0)
    noisy, maps = grown.state_dict(), growth_maps(plan)
    for name, unit in [("layers.0.attn.q_proj.weight", "hidden"), ("layers.1.mlp.down_proj.weight", "ffn"),
                       ("lm_head.weight", "hidden"), ("layers.2.attn.o_proj.weight", "q")]:
        # Without noise the two copies of in-unit 0 have equal columns; with it they differ.
        copy = int((maps[unit].index == 0).nonzero()[1])
        torch.testing.assert_close(plain[name][:, 0], plain[name][:, copy], rtol=0, atol=0)
        assert (noisy[name][:, 0] - noisy[name][:, copy]).abs().max() > 1e-3, name


# ------------------------------------------------------------------ AKI provenance
def _grown_layers(model, plan):
    return grow_state_dict(model.state_dict(), plan)


PROJ_OUT = [("attn.q_proj.weight", "q"), ("attn.q_proj.bias", "q"), ("attn.k_proj.weight", "kv"),
            ("attn.v_proj.bias", "kv"), ("attn.o_proj.weight", "hidden"), ("mlp.gate_proj.weight", "ffn"),
            ("mlp.up_proj.weight", "ffn"), ("mlp.down_proj.weight", "hidden")]


@pytest.mark.parametrize("method, kv", [("aki", 4), ("aki-pro", 2)])
def test_aki_new_units_come_from_the_next_layer(method, kv):
    """Original out-units equal FPI's of layer l, new ones FPI's of layer l + 1; the top layer, norms,
    embeddings and LM head are FPI's."""
    model = random_model(n_kv_heads=kv)
    request = dict(dim=128, n_heads=8, ffn_dim=160)
    aki_plan = plan_growth(model.config, method=method, **request)
    aki = _grown_layers(model, aki_plan)
    fpi = _grown_layers(model, plan_growth(model.config, **request))
    maps = growth_maps(aki_plan)
    top = model.config.n_layers - 1
    for rest, unit in PROJ_OUT:
        new = maps[unit].is_new
        for l in range(top):
            got, same, nxt = aki[f"layers.{l}.{rest}"], fpi[f"layers.{l}.{rest}"], fpi[f"layers.{l + 1}.{rest}"]
            torch.testing.assert_close(got[~new], same[~new], rtol=0, atol=0, msg=f"{l} {rest}")
            torch.testing.assert_close(got[new], nxt[new], rtol=0, atol=0, msg=f"{l} {rest}")
        torch.testing.assert_close(aki[f"layers.{top}.{rest}"], fpi[f"layers.{top}.{rest}"], rtol=0, atol=0)
    for name in ("tok_embeddings.weight", "norm.weight", "lm_head.weight", "layers.0.attn_norm.weight"):
        torch.testing.assert_close(aki[name], fpi[name], rtol=0, atol=0)
    if method == "aki-pro":  # GQA rule: 2 groups of 2 -> 4 q heads; k/v keep their heads
        assert maps["kv"].is_new.sum() == 0
        hd = model.config.head_dim
        q0, q1 = (model.state_dict()[f"layers.{l}.attn.q_proj.weight"] for l in (0, 1))
        grown = aki["layers.0.attn.q_proj.weight"][:, :64] * 2  # columns 0..63 hold half of the source's
        # group 0 = heads 0..3: 0, 1 are layer 0's, the new 2, 3 layer 1's heads 0, 1; group 1 likewise
        provenance = {0: (q0, 0), 1: (q0, 1), 2: (q1, 0), 3: (q1, 1), 4: (q0, 2), 5: (q0, 3), 6: (q1, 2), 7: (q1, 3)}
        for new, (layer, old) in provenance.items():
            torch.testing.assert_close(grown[new * hd:(new + 1) * hd], layer[old * hd:(old + 1) * hd])


@pytest.mark.parametrize("old, new, first, last", [
    (4, 6, [0, 0, 1, 2, 2, 3], [0, 1, 1, 2, 3, 3]),  # LLaMA-Pro: a copy of each group's last block after it
    (3, 5, [0, 0, 1, 1, 2], [0, 1, 1, 2, 2]),
    (2, 4, [0, 0, 1, 1], [0, 0, 1, 1]),  # groups of one layer: both placements agree
])
def test_identity_blocks_follow_the_first_or_the_last_layer_of_their_group(old, new, first, last):
    assert layer_order(old, new, "identity", "first") == first
    assert layer_order(old, new, "identity", "last") == last
    for order in (first, last):
        # Every source layer once, in order; each inserted copy right after the layer it copies.
        originals = [source for l, source in enumerate(order) if l not in inserted_copies(order)]
        assert originals == list(range(old))
        assert all(order[l] == order[l - 1] for l in inserted_copies(order))


@pytest.mark.parametrize("placement", ["first", "last"])
def test_identity_blocks_keep_the_logits_with_either_placement(placement):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, dim=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=64)
    source = DecoderLM(cfg).eval()
    grown = grow_model(source, plan_growth(cfg, n_layers=6, depth="identity", placement=placement)).eval()
    ids = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(grown(ids).logits, source(ids).logits, rtol=0, atol=1e-5)
    order = layer_order(4, 6, "identity", placement)
    for l in inserted_copies(order):  # the inserted block's residual writers are zero, the rest its source's
        assert not grown.layers[l].attn.o_proj.weight.any() and not grown.layers[l].mlp.down_proj.weight.any()
        torch.testing.assert_close(grown.layers[l].attn.q_proj.weight, source.layers[order[l]].attn.q_proj.weight)


def test_placement_is_for_identity_blocks_only():
    cfg = ModelConfig(vocab_size=64, dim=32, n_layers=4, n_heads=4, ffn_dim=64)
    with pytest.raises(LabError, match="--placement last places identity blocks: it needs --depth identity"):
        plan_growth(cfg, n_layers=6, depth="interpolate", placement="last")
    with pytest.raises(LabError, match="--placement 'middle'"):
        plan_growth(cfg, n_layers=6, depth="identity", placement="middle")
