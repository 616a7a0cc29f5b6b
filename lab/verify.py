"""Compare a grown or upcycled checkpoint with its source: the numbers of the paper's Tables 1 and 2.

`verify_against_source` runs both models on the same token sequences and reports the largest gap
between their logits and the language-modelling loss of each.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch


@dataclass
class VerifyReport:
    max_logit_gap: float
    source_loss: float
    output_loss: float
    n_sequences: int
    seq_len: int
    tokens_from: str  # where the token sequences came from

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        return (f"verify on {self.n_sequences} x {self.seq_len} tokens ({self.tokens_from}): "
                f"max |logit gap| {self.max_logit_gap:.3e}, loss source {self.source_loss:.4f}, "
                f"output {self.output_loss:.4f}")


def verification_tokens(checkpoint: str | os.PathLike, vocab_size: int, n_sequences: int = 4,
                        seq_len: int = 128, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Token sequences (n, seq_len) to compare models on, and a word on where they came from.

    Random ids (seeded) stand in when no text can be encoded for this vocabulary.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (n_sequences, seq_len), generator=generator), "random token ids"


@torch.no_grad()
def compare(source, output, tokens: torch.Tensor) -> tuple[float, float, float]:
    """(max |logit gap|, source loss, output loss) of two lab models on tokens (n, T), in fp32."""
    a = source(tokens, labels=tokens)
    b = output(tokens, labels=tokens)
    gap = (a.logits.float() - b.logits.float()).abs().max().item()
    return gap, a.lm_loss.item(), b.lm_loss.item()


def verify_against_source(source_dir: str | os.PathLike, output_dir: str | os.PathLike,
                          n_sequences: int = 4, seq_len: int = 128) -> VerifyReport:
    """Load both checkpoints in fp32 and compare them on the same sequences."""
    from lab.checkpoint import load_pretrained

    source = load_pretrained(source_dir, dtype=torch.float32)
    output = load_pretrained(output_dir, dtype=torch.float32)
    tokens, origin = verification_tokens(source_dir, source.config.vocab_size, n_sequences, seq_len)
    gap, source_loss, output_loss = compare(source, output, tokens)
    return VerifyReport(gap, source_loss, output_loss, n_sequences, seq_len, origin)
