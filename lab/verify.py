"""Compare a grown or upcycled checkpoint with its source: the numbers of the paper's Tables 1 and 2.

`verify_against_source` runs both models on the same token sequences (real text, encoded with the
source checkpoint's tokenizer, when it has one) and reports the largest gap between their logits and
the language-modelling loss of each.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lab.errors import LabError


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
                        seq_len: int = 128, seed: int = 0, text: str | None = None) -> tuple[torch.Tensor, str]:
    """Token sequences (n, seq_len) to compare models on, and a word on where they came from.

    Real text when the checkpoint holds a tokenizer.json: `text` if given, else the validation split of
    the shipped corpus (all domains in turn), encoded with the checkpoint's own tokenizer. Seeded random
    ids stand in only when there is no tokenizer. A `text` shorter than one sequence gives one shorter
    sequence. Token ids outside the model's vocabulary are a LabError.
    """
    from lab.data import load_tokenizer, validation_token_sample

    tokenizer_file = Path(checkpoint) / "tokenizer.json"
    if not tokenizer_file.is_file():
        if text is not None:
            raise LabError(f"{checkpoint}: no tokenizer.json to encode the verification text with")
        generator = torch.Generator().manual_seed(seed)
        tokens = torch.randint(0, vocab_size, (n_sequences, seq_len), generator=generator)
        return tokens, f"random token ids, seed {seed}: no tokenizer.json in {checkpoint}"
    tokenizer = load_tokenizer(tokenizer_file)
    if text is None:
        tokens = validation_token_sample(tokenizer, n_sequences, seq_len)
        origin = "validation text of the shipped corpus"
    else:
        ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.int64)
        if ids.numel() == 0:
            raise LabError("the verification text is empty")
        n = min(n_sequences, ids.numel() // seq_len)
        tokens = ids[: n * seq_len].reshape(n, seq_len) if n > 0 else ids[None, :]
        origin = "the given text"
    if tokens.max().item() >= vocab_size:
        raise LabError(f"{tokenizer_file} gives token id {tokens.max().item()}, outside the model's "
                       f"vocabulary of {vocab_size}")
    return tokens, f"{origin}, encoded with {tokenizer_file}"


@torch.no_grad()
def compare(source, output, tokens: torch.Tensor) -> tuple[float, float, float]:
    """(max |logit gap|, source loss, output loss) of two lab models on tokens (n, T), in fp32."""
    a = source(tokens, labels=tokens)
    b = output(tokens, labels=tokens)
    gap = (a.logits.float() - b.logits.float()).abs().max().item()
    return gap, a.lm_loss.item(), b.lm_loss.item()


def verify_against_source(source_dir: str | os.PathLike, output_dir: str | os.PathLike,
                          n_sequences: int = 4, seq_len: int = 128, text: str | None = None) -> VerifyReport:
    """Load both checkpoints in fp32 and compare them on the same sequences (see `verification_tokens`)."""
    from lab.checkpoint import load_pretrained

    source = load_pretrained(source_dir, dtype=torch.float32)
    output = load_pretrained(output_dir, dtype=torch.float32)
    if source.config.vocab_size != output.config.vocab_size:
        raise LabError(f"{output_dir}: vocabulary of {output.config.vocab_size} tokens, the source has "
                       f"{source.config.vocab_size}: the logits do not compare")
    tokens, origin = verification_tokens(source_dir, source.config.vocab_size, n_sequences, seq_len, text=text)
    gap, source_loss, output_loss = compare(source, output, tokens)
    return VerifyReport(gap, source_loss, output_loss, tokens.shape[0], tokens.shape[1], origin)
