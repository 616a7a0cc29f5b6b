"""Train the lab's tokenizer on the train split of data/corpus.jsonl.

    python data/build_tokenizer.py         # (data/build_corpus.py runs it too)

A byte-level BPE (GPT-2 style) with 4096 tokens, trained with the `tokenizers` library. Byte-level
means every string is encoded without loss and without an unknown token: the 256 byte symbols are in
the vocabulary, there is no normaliser, and the decoder maps the symbols back to the same bytes.
Text is first split into words, single digits, punctuation and spaces (Qwen2's pattern), so "122" is
always "1", "2", "2": the model sees the same digit tokens in every number, which is what lets a small
model learn to add. (transformers 5 opens a `qwen2` checkpoint's tokenizer with Qwen2's own class,
which adds an NFC normalisation; the shipped corpus is NFC, so both give the same ids on it.)
`<|endoftext|>` (id 0) ends every document. The tokenizer_config.json and special_tokens_map.json
written beside it let `transformers.AutoTokenizer` open any folder holding these files;
generation_config.json tells `generate` to stop at `<|endoftext|>`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOCAB_SIZE = 4096
EOS_TOKEN = "<|endoftext|>"
# Qwen2's split into words, numbers (one digit each), punctuation and spaces. transformers 5 rebuilds the
# tokenizer of any `qwen2` checkpoint (the lab's dense layout) with exactly this split, whatever
# tokenizer.json says; using it here makes AutoTokenizer and `tokenizers` give the same ids.
SPLIT_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
TOKENIZER_OUTPUTS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def train_texts(corpus: Path) -> list[str]:
    with open(corpus, encoding="utf-8") as f:
        return [r["text"] for r in map(json.loads, f) if r["split"] == "train"]


def build_tokenizer(corpus: Path, out: Path) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(train_texts(corpus), trainer)
    tokenizer.save(str(out / "tokenizer.json"), pretty=True)
    # What transformers needs to open the folder: the fast tokenizer class, the EOS token, and no
    # "clean up" of spaces on decode (it would change " ," into "," and break the round trip).
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "bos_token": None,
        "unk_token": None,
        "pad_token": EOS_TOKEN,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    # Copied into every checkpoint saved with this tokenizer, so that generation stops at a document's end.
    eos = tokenizer.token_to_id(EOS_TOKEN)
    generation = {"eos_token_id": eos, "pad_token_id": eos}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


if __name__ == "__main__":
    build_tokenizer(HERE / "corpus.jsonl", HERE)
    sys.exit(0)
