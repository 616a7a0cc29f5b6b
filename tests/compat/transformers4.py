"""Cross-version check: checkpoints written by the lab open in transformers 4.x with the same logits,
and checkpoints written by transformers 4.x load in the lab with the same logits.

Not part of the default suite (it needs a second environment with transformers 4.x); run it with
`make compat4`, which builds that environment in .venv-transformers4.

    python tests/compat/transformers4.py write-lab DIR      # in the lab's environment
    python tests/compat/transformers4.py check-in-hf DIR    # in the transformers 4.x environment
    python tests/compat/transformers4.py check-in-lab DIR   # in the lab's environment
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

IDS = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(0))
LAB_CASES = {
    "llama": dict(qkv_bias=False),
    "qwen2": dict(qkv_bias=True),
    "qwen2_tied": dict(qkv_bias=True, tie_embeddings=True),
    "mistral": dict(qkv_bias=False, sliding_window=8),
    "llama3_rope": dict(qkv_bias=False, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
    "mixtral": dict(qkv_bias=False, n_experts=4, top_k=2),
    "qwen2_moe": dict(qkv_bias=True, n_experts=4, top_k=2),
    "qwen2_moe_no_bias_softmax_topk": dict(qkv_bias=False, n_experts=4, top_k=2, routing="softmax_topk"),
    "qwen2_moe_some_dense_layers": dict(qkv_bias=True, n_experts=4, top_k=1, moe_layers=(1,), moe_ffn_dim=32),
    "qwen2_moe_shared_expert": dict(qkv_bias=True, n_experts=4, top_k=2, shared_expert_ffn_dim=48),
}
HF_CASES = {"llama": ("LlamaConfig", {}), "qwen2": ("Qwen2Config", {}), "mistral": ("MistralConfig", {}),
            "mixtral": ("MixtralConfig", dict(num_local_experts=4)),
            "qwen2_moe": ("Qwen2MoeConfig", dict(num_experts=4, moe_intermediate_size=32,
                                                 shared_expert_intermediate_size=48))}


def perturb_(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def write_lab(root: Path) -> None:
    import lab

    logits = {}
    for name, fields in LAB_CASES.items():
        torch.manual_seed(0)
        model = perturb_(lab.DecoderLM(lab.ModelConfig(vocab_size=96, dim=64, n_layers=3, n_heads=4, n_kv_heads=2,
                                                       ffn_dim=96, **fields)))
        with torch.no_grad():
            logits[name] = model(IDS).logits
        lab.save_pretrained(model, root / f"lab_{name}", overwrite=True)
    save_file(logits, str(root / "lab_logits.safetensors"))


def check_in_hf(root: Path) -> int:
    import transformers

    failures = 0
    expected = load_file(str(root / "lab_logits.safetensors"))
    for name, ref in expected.items():
        model = transformers.AutoModelForCausalLM.from_pretrained(root / f"lab_{name}").eval()
        with torch.no_grad():
            gap = (model(IDS).logits - ref).abs().max().item()
        failures += gap > 1e-5
        print(f"transformers {transformers.__version__} opens lab_{name}: max |logit gap| {gap:.2e}")
    logits = {}  # and write transformers 4.x checkpoints for the lab to read
    for name, (config_name, extra) in HF_CASES.items():
        config = getattr(transformers, config_name)(vocab_size=96, hidden_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, num_key_value_heads=2,
                                                    intermediate_size=96, **extra)
        torch.manual_seed(0)
        model = perturb_(transformers.AutoModelForCausalLM.from_config(config))
        with torch.no_grad():
            logits[name] = model(IDS).logits
        model.save_pretrained(root / f"hf_{name}")
    save_file(logits, str(root / "hf_logits.safetensors"))
    return failures


def check_in_lab(root: Path) -> int:
    import lab

    failures = 0
    for name, ref in load_file(str(root / "hf_logits.safetensors")).items():
        with torch.no_grad():
            gap = (lab.load_pretrained(root / f"hf_{name}")(IDS).logits - ref).abs().max().item()
        failures += gap > 1e-5
        print(f"lab opens transformers-4 {name}: max |logit gap| {gap:.2e}")
    return failures


if __name__ == "__main__":
    step, root = sys.argv[1], Path(sys.argv[2])
    root.mkdir(parents=True, exist_ok=True)
    if step == "write-lab":
        write_lab(root)
    else:
        sys.exit(1 if (check_in_hf(root) if step == "check-in-hf" else check_in_lab(root)) else 0)
