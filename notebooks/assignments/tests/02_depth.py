"""Visible tests of assignment 02_depth: the layer orders against the lab's, and growth's invariants."""

import copy

import torch

from lab.config import ModelConfig
from lab.grading import check_close, check_equal, question
from lab.growth import inserted_copies, layer_order
from lab.model import DecoderLM

RESIDUAL_WRITERS = ("attn.o_proj.weight", "mlp.down_proj.weight")

# The lab's depth growth is the answer: the student's process cannot import it.
OFF_LIMITS = ["lab.growth", "lab.derive"]
# train_steps uses torch's AdamW, whose first step imports torch._dynamo (seconds): the student's process
# imports it while the first questions run.
PRELOAD = ["torch._dynamo"]


def tiny_model(n_layers: int = 2, seed: int = 0) -> DecoderLM:
    """A tiny decoder with every parameter random (norms too), so a wrongly copied tensor shows."""
    torch.manual_seed(seed)
    model = DecoderLM(ModelConfig(vocab_size=64, dim=16, n_layers=n_layers, n_heads=2, n_kv_heads=1, ffn_dim=32,
                                  max_seq_len=16))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def tokens(n: int = 2, length: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 64, (n, length), generator=torch.Generator().manual_seed(seed))


def check_order(student, fn: str, kind: str, old: int, new: int) -> None:
    check_equal(getattr(student, fn)(old, new), layer_order(old, new, kind), f"{fn}({old}, {new})")


@question(points=2)
def q1_stack_order(student):
    """stack_order: the model repeated on top of itself"""
    for old, new in ((3, 6), (2, 5), (4, 4)):
        check_order(student, "stack_order", "stack", old, new)


@question(points=2)
def q2_interpolate_order(student):
    """interpolate_order: each layer repeated in place"""
    for old, new in ((3, 6), (2, 5), (3, 7), (4, 4)):
        check_order(student, "interpolate_order", "interpolate", old, new)


def check_layers_copied(grown, model, order, what: str) -> None:
    """Layer l of `grown` holds the tensors of layer order[l] of `model`; the rest equal."""
    assert isinstance(grown, DecoderLM), f"{what} should return a DecoderLM, got {type(grown).__name__}"
    assert grown.config.n_layers == len(order) and len(grown.layers) == len(order), (
        f"{what}: expected {len(order)} layers, got config.n_layers={grown.config.n_layers}, "
        f"len(layers)={len(grown.layers)}")
    source = model.state_dict()
    for name, value in grown.state_dict().items():
        if name.startswith("layers."):
            _, l, rest = name.split(".", 2)
            expected, origin = source[f"layers.{order[int(l)]}.{rest}"], f"layers.{order[int(l)]}.{rest}"
        else:
            expected, origin = source[name], name
        check_close(value, expected, f"{what}: {name} should be a copy of the source's {origin}", atol=0, rtol=0)


@question(points=3)
def q3_grow_depth(student):
    """grow_depth: layer l copies layer order[l]; copies do not share memory"""
    model = tiny_model(3)
    before = copy.deepcopy(model.state_dict())
    order = [0, 0, 1, 2, 1]
    grown = student.grow_depth(model, order)
    check_layers_copied(grown, model, order, f"grow_depth(3 layers, order={order})")
    with torch.no_grad():
        for p in grown.parameters():
            p.add_(1.0)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), (
            f"changing the grown model changed the source's {name}: clone the tensors you copy")


@question(points=3)
def q4_identity_growth(student):
    """identity_growth: inserted copies are identity blocks; the logits do not change"""
    model = tiny_model(2)
    grown = student.identity_growth(model, 5)
    order = layer_order(2, 5, "identity")
    assert isinstance(grown, DecoderLM) and len(grown.layers) == 5, "identity_growth(2 layers, 5) should return a 5-layer DecoderLM"
    state = grown.state_dict()
    for l in inserted_copies(order):
        for name in RESIDUAL_WRITERS:
            assert not state[f"layers.{l}.{name}"].any(), f"layers.{l}.{name} should be zero: layer {l} is an inserted copy"
    ids = tokens()
    with torch.no_grad():
        check_close(grown.eval()(ids).logits, model(ids).logits, "invariant: identity growth keeps the logits",
                    atol=1e-5, rtol=1e-4)


def reference_training(model: DecoderLM, batches: list[torch.Tensor], lr: float) -> list[float]:
    """The losses the question asks for, computed the way its text says (AdamW, one step per batch).

    AdamW (weight decay 0) is written out here rather than taken from torch.optim: the first step of a
    torch optimizer imports torch._dynamo, seconds of the grader's time on every submission.
    """
    model.train()
    beta1, beta2, eps = 0.9, 0.95, 1e-8
    params = [p for p in model.parameters() if p.requires_grad]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    losses = []
    for step, batch in enumerate(batches, 1):
        loss = model(batch, labels=batch).loss
        losses.append(loss.item())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for p, g, (m, v) in zip(params, grads, moments):
                if g is None:
                    continue
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v.sqrt() / (1 - beta2 ** step) ** 0.5).add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** step))
    return losses


@question(points=3)
def q5_train_steps(student):
    """train_steps: AdamW, one step per batch, loss before each step"""
    model = tiny_model(2)
    expected_model = copy.deepcopy(model)
    batches = [tokens(seed=s) for s in range(6)]
    losses = student.train_steps(model, batches, 1e-2)
    assert isinstance(losses, list) and len(losses) == len(batches), (
        f"train_steps should return a list of {len(batches)} losses, got {type(losses).__name__} "
        f"of length {len(losses) if hasattr(losses, '__len__') else '?'}")
    assert all(isinstance(x, float) for x in losses), "train_steps should return Python floats (use loss.item())"
    expected = reference_training(expected_model, batches, 1e-2)
    check_close(torch.tensor(losses), torch.tensor(expected), "losses of 6 AdamW steps at lr 1e-2",
                atol=1e-4, rtol=1e-4)
    check_close(model.layers[0].attn.q_proj.weight, expected_model.layers[0].attn.q_proj.weight,
                "the model trained in place (layers.0.attn.q_proj.weight after training)", atol=1e-5, rtol=1e-4)


@question(points=3)
def q6_compare_depth_growth(student):
    """compare_depth_growth: each order grown from the same source, then trained"""
    model = tiny_model(2)
    before = copy.deepcopy(model.state_dict())
    batch = tokens(n=4, length=12)
    results = student.compare_depth_growth(model, 4, [batch] * 8, 1e-2, batch)
    assert isinstance(results, dict) and set(results) == {"stack", "interpolate", "identity"}, (
        f"expected a dict with keys 'stack', 'interpolate', 'identity', got "
        f"{sorted(results) if isinstance(results, dict) else type(results).__name__}")
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"compare_depth_growth changed the source model's {name}"
    with torch.no_grad():
        source_loss = model.eval()(batch, labels=batch).loss.item()
    start, end = results["identity"]
    assert abs(start - source_loss) < 1e-4, (
        f"identity: loss right after growth should equal the source's {source_loss:.4f}, got {start:.4f}")
    for kind, (start, end) in results.items():
        expected = student_free_loss(model, kind, batch)
        assert abs(start - expected) < 1e-4, f"{kind}: loss right after growth should be {expected:.4f}, got {start:.4f}"
        assert end < start, (f"{kind}: 8 steps on the evaluation batch itself should lower its loss, "
                             f"got {start:.4f} -> {end:.4f} (did you train the grown model?)")


def student_free_loss(model: DecoderLM, kind: str, batch: torch.Tensor) -> float:
    """The loss of `model` grown to 4 layers by `kind`, built with the lab's layer orders (not the student's)."""
    order = layer_order(model.config.n_layers, 4, kind)
    source = model.state_dict()
    state = {name: value for name, value in source.items() if not name.startswith("layers.")}
    for new, old in enumerate(order):
        for name, value in source.items():
            if name.startswith(f"layers.{old}."):
                zero = kind == "identity" and new in inserted_copies(order) and name.endswith(RESIDUAL_WRITERS)
                state[f"layers.{new}.{name[len(f'layers.{old}.'):]}"] = torch.zeros_like(value) if zero else value
    grown = DecoderLM(model.config.replace(n_layers=4))
    grown.load_state_dict(state)
    with torch.no_grad():
        return grown.eval()(batch, labels=batch).loss.item()
