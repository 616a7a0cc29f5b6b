# assignment: 01_fpi
# Correct answers written differently from the solution: loops, index_select, explicit counts.
import torch

from lab.config import ModelConfig
from lab.mlp import MLP
from lab.model import Attention


def growth_map(old, new):
    return torch.tensor([i - (i // old) * old for i in range(new)], dtype=torch.long)


def fpi_out(w, g):
    return torch.index_select(w, 0, g)


def fpi_in(w, g):
    counts = {}
    for k in g.tolist():
        counts[k] = counts.get(k, 0) + 1
    columns = [w[:, k] / counts[k] for k in g.tolist()]
    return torch.stack(columns, dim=1)


@torch.no_grad()
def grow_mlp(mlp, dim_map, ffn_map):
    new = MLP(len(dim_map), len(ffn_map))
    new.gate_proj.weight[:] = fpi_in(fpi_out(mlp.gate_proj.weight, ffn_map), dim_map)
    new.up_proj.weight[:] = fpi_in(fpi_out(mlp.up_proj.weight, ffn_map), dim_map)
    new.down_proj.weight[:] = fpi_out(fpi_in(mlp.down_proj.weight, ffn_map), dim_map)
    return new


def grouped_head_map(n_kv_heads, old_per_group, new_per_group):
    heads = []
    for group in range(n_kv_heads):
        for p in range(new_per_group):
            heads.append(group * old_per_group + p % old_per_group)
    return torch.tensor(heads)


@torch.no_grad()
def grow_attention(attn, new_n_heads):
    hd, kv = attn.head_dim, attn.n_kv_heads
    cfg = ModelConfig(vocab_size=1, dim=attn.q_proj.in_features, n_layers=1, n_heads=new_n_heads, n_kv_heads=kv,
                      head_dim=hd, ffn_dim=1, qkv_bias=attn.q_proj.bias is not None)
    new = Attention(cfg, layer=attn.layer)
    heads = grouped_head_map(kv, attn.n_heads // kv, new_n_heads // kv)
    rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads.tolist()])
    new.q_proj.weight.copy_(attn.q_proj.weight[rows])
    new.o_proj.weight.copy_(fpi_in(attn.o_proj.weight, rows))
    new.k_proj.load_state_dict(attn.k_proj.state_dict())
    new.v_proj.load_state_dict(attn.v_proj.state_dict())
    if attn.q_proj.bias is not None:
        new.q_proj.bias.copy_(attn.q_proj.bias[rows])
    return new


def width_growth_is_exact(old_dim, new_dim):
    return max(new_dim, old_dim) % min(new_dim, old_dim) == 0 and new_dim >= old_dim
