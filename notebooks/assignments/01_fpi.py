# %% [markdown]
# # Assignment 1: Function-preserving initialization (FPI)
#
# Scale-Up starts a bigger model from a smaller trained one. With **function-preserving
# initialization** (FPI; Net2Net, bert2BERT; AquilaMoE section 2.2.1) the bigger model computes
# *exactly* what the small one computes, so no training is lost.
#
# Take a linear map $y = W x$ with $W$ of shape (out, in). Growing a dimension from $d$ to $d'$ units
# uses a **growth map** $g: \{0..d'-1\} \to \{0..d-1\}$: new unit $i$ copies old unit $g(i)$, and the
# original units stay where they are, $g(i) = i$ for $i < d$. Let $C(k) = |\{i : g(i) = k\}|$ count
# the copies of old unit $k$.
#
# - **out-dimension**: new row $i$ of $W$ is old row $g(i)$, a copy: $W'_{i,:} = W_{g(i),:}$.
# - **in-dimension**: new column $j$ is old column $g(j)$ divided by the number of its copies,
#   $W'_{:,j} = W_{:,g(j)} / C(g(j))$, so that the copies of an input unit, which carry the same
#   value, add up to what the one unit contributed: $W' x' = W x$ when $x'_j = x_{g(j)}$.
#
# Attention grows by whole **heads** ($h$ = head_dim rows each). With grouped-query attention (GQA)
# AquilaMoE keeps the number of key/value groups and grows the query heads *inside* each group, so
# every new query head still reads its own group's key/value head; k and v do not change at all.
#
# You will write the growth map, both FPI operators, grow a SwiGLU MLP and a GQA attention block,
# and check that each keeps the function.
#
# **How this file is graded.** `python -m lab grade 01_fpi.py` imports this file and calls your
# functions. Cells under `if __name__ == "__main__":` are experiments for you: they run in Jupyter
# (or `python 01_fpi.py`) and the grader skips them. Replace every `raise NotImplementedError`.

# %%
# assignment: 01_fpi
import torch
import torch.nn.functional as F

from lab.config import ModelConfig
from lab.mlp import MLP
from lab.model import Attention, rope_inv_freq, rope_tables


# %% [markdown]
# ## Q1 (1 point): the cyclic growth map
# The lab's default map is cyclic, $g(i) = i \bmod d$: growing 3 units to 7 gives
# `[0, 1, 2, 0, 1, 2, 0]`. Return it as an int64 tensor of shape `(new,)`.

# %%
def growth_map(old: int, new: int) -> torch.Tensor:
    """g(i) = i mod old for i in [0, new): the old unit each new unit copies; int64, shape (new,)."""
    # Your code here.
    raise NotImplementedError("growth_map")


# %% [markdown]
# ## Q2 (2 points): FPI along the out-dimension
# Copy rows: `out[i] = w[g[i]]`. This works for a weight (out, in), a bias (out,) or a norm weight.

# %%
def fpi_out(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Rows of `w` (dimension 0) copied by the map `g`: out[i] = w[g[i]]; shape (len(g), *w.shape[1:])."""
    # Your code here.
    raise NotImplementedError("fpi_out")


# %% [markdown]
# ## Q3 (3 points): FPI along the in-dimension
# Copy columns and divide each by the number of copies of its old column:
# `out[:, j] = w[:, g[j]] / C(g[j])`. Mind maps where units are copied unequally often:
# with `g = [0, 1, 2, 0, 0]`, column 0 has three copies and columns 1 and 2 one each.

# %%
def fpi_in(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Columns of `w` (out, old) split by `g`: out[:, j] = w[:, g[j]] / C(g[j]); shape (out, len(g))."""
    # Your code here.
    raise NotImplementedError("fpi_in")


# %% [markdown]
# ## Q4 (4 points): grow a SwiGLU MLP
# The MLP computes $\mathrm{down}(\mathrm{silu}(\mathrm{gate}(x)) \odot \mathrm{up}(x))$, with `gate`
# and `up` of shape (ffn, dim) and `down` of shape (dim, ffn). Grow the hidden size with `dim_map` and
# the intermediate size with `ffn_map`: which dimension of each weight is an *out*-dimension and
# which an *in*-dimension? Return a **new** `MLP` (leave the given one unchanged).
#
# Invariant to check: `new_mlp(x[..., dim_map])` equals `mlp(x)[..., dim_map]`.

# %%
@torch.no_grad()
def grow_mlp(mlp: MLP, dim_map: torch.Tensor, ffn_map: torch.Tensor) -> MLP:
    """A new MLP of size (len(dim_map), len(ffn_map)) computing the same function on copied inputs."""
    # Your code here.
    raise NotImplementedError("grow_mlp")


# %% [markdown]
# ## Q5 (2 points): the GQA head map
# Query heads are laid out group by group: with `n_kv_heads` groups of `per_group` heads, query head
# `j * per_group + p` is head `p` of group `j`. Growing every group from `old_per_group` to
# `new_per_group` heads, new head `p` of group `j` copies head `p mod old_per_group` of the *same*
# group `j`. Return the old head index of every new head, int64 of shape
# `(n_kv_heads * new_per_group,)`. Example: 2 groups of 2 heads grown to 3 per group gives
# `[0, 1, 0, 2, 3, 2]`.

# %%
def grouped_head_map(n_kv_heads: int, old_per_group: int, new_per_group: int) -> torch.Tensor:
    """Old query head copied by each new query head when each kv group grows its heads in place."""
    # Your code here.
    raise NotImplementedError("grouped_head_map")


# %% [markdown]
# ## Q6 (4 points): grow a GQA attention block
# Grow an `Attention` block from `n_heads` to `new_n_heads` query heads; the hidden size, `head_dim`
# and the number of kv heads stay. A head is a block of `head_dim` consecutive rows of `q_proj`
# (and of its bias) and of `head_dim` consecutive columns of `o_proj`. Hints: turn the head map into
# a map of rows, `rows[h * head_dim + c] = head_map[h] * head_dim + c`; `q_proj` is grown along its
# out-dimension, `o_proj` along its in-dimension; `k_proj` and `v_proj` are copied unchanged.
# `new_attention` builds an empty block of the right shape for you.
#
# Invariant to check: the grown block gives the same output as the original on any input.

# %%
def new_attention(dim: int, n_heads: int, n_kv_heads: int, head_dim: int, qkv_bias: bool) -> Attention:
    """An Attention block of the lab's model with these sizes (weights to be filled in)."""
    cfg = ModelConfig(vocab_size=1, dim=dim, n_layers=1, n_heads=n_heads, n_kv_heads=n_kv_heads,
                      head_dim=head_dim, ffn_dim=1, qkv_bias=qkv_bias)
    return Attention(cfg, layer=0)


@torch.no_grad()
def grow_attention(attn: Attention, new_n_heads: int) -> Attention:
    """A new Attention with `new_n_heads` query heads (kv heads kept) computing the same function."""
    # Your code here.
    raise NotImplementedError("grow_attention")


# %% [markdown]
# ## Q7 (1 point): when is the whole model preserved?
# Every block starts with an RMSNorm, $x / \mathrm{rms}(x)$. After growing the hidden size from
# `old_dim` to `new_dim` with the cyclic map, the RMS of the copied vector equals the old one only if
# every unit is copied the same number of times. Return whether FPI with the cyclic map keeps the
# whole model's function exactly (AquilaMoE Table 2: 4096 to 8192 keeps the loss, 4096 to 5120 does not).

# %%
def width_growth_is_exact(old_dim: int, new_dim: int) -> bool:
    """True when the cyclic map copies every hidden unit equally often, so RMSNorm is unchanged."""
    # Your code here.
    raise NotImplementedError("width_growth_is_exact")


# %% [markdown]
# ## Experiments (not graded)
# Check your operators on a small MLP and attention block, then grow a whole model with the lab's
# `grow_model` to an integer and a non-integer width ratio and compare the logits.

# %%
if __name__ == "__main__":
    torch.manual_seed(0)
    mlp = MLP(8, 12)
    dim_map, ffn_map = growth_map(8, 16), growth_map(12, 20)
    x = torch.randn(3, 8)
    gap = (grow_mlp(mlp, dim_map, ffn_map)(x[:, dim_map]) - mlp(x)[:, dim_map]).abs().max()
    print(f"MLP: largest gap after FPI {gap:.2e}")

    attn = new_attention(32, 4, 2, 8, qkv_bias=True)
    x = torch.randn(2, 5, 32)
    cos, sin = rope_tables(torch.arange(5), rope_inv_freq(8, 10000.0), x.dtype)
    gap = (grow_attention(attn, 6)(x, cos, sin) - attn(x, cos, sin)).abs().max()
    print(f"attention 4 -> 6 heads (2 kv groups): largest gap {gap:.2e}")

# %%
if __name__ == "__main__":
    from lab.growth import plan_growth
    from lab.derive import grow_model
    from lab.model import DecoderLM

    small = DecoderLM(ModelConfig(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)).eval()
    ids = torch.randint(0, 256, (2, 16))
    for dim, heads in ((128, 8), (96, 6)):
        plan = plan_growth(small.config, method="fpi", dim=dim, n_heads=heads, ffn_dim=2 * dim)
        with torch.no_grad():
            gap = (grow_model(small, plan).eval()(ids).logits - small(ids).logits).abs().max()
        print(f"width 64 -> {dim}: largest logit gap {gap:.2e} (exact: {width_growth_is_exact(64, dim)})")
