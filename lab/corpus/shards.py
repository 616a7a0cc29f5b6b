"""Memory-mapped token shards and their manifest.

    DIR/manifest.json
    DIR/train/english-000.bin      little-endian uint16 token ids, documents joined, each followed by EOS
    DIR/train/english-001.bin      ...at most SHARD_TOKENS tokens a shard
    DIR/validation/code-000.bin

`manifest.json` holds, per split and domain, the documents, bytes and tokens, and every shard's file,
token count and sha256; the tokenizer's sha256 and EOS id; the sources and their versions. It holds no
time and no path outside DIR, so two builds from the same sources give the same manifest byte for byte.

Readers map the shards (`numpy.memmap`): a process's resident memory holds the pages it touched, not
the corpus, and every process of a machine shares the same page cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lab.errors import LabError

MANIFEST = "manifest.json"
FORMAT = "lab-token-shards/1"
SHARD_TOKENS = 1 << 23  # 8M tokens, 16 MB: a few shards per domain, each hashed and checked on its own
DTYPE = np.dtype("<u2")


def write_stream(out: Path, split: str, domain: str, ids: np.ndarray) -> list[dict]:
    """Write one domain's stream of `ids` as shards under out/split/; return their manifest entries."""
    if ids.size and int(ids.max()) > np.iinfo(DTYPE).max:
        raise LabError(f"token id {int(ids.max())} does not fit in uint16; shards need a vocabulary under 65,536")
    (out / split).mkdir(parents=True, exist_ok=True)
    shards = []
    for k, start in enumerate(range(0, max(ids.size, 1), SHARD_TOKENS)):
        name = f"{split}/{domain}-{k:03d}.bin"
        data = ids[start:start + SHARD_TOKENS].astype(DTYPE).tobytes()
        (out / name).write_bytes(data)
        shards.append({"file": name, "tokens": len(data) // DTYPE.itemsize,
                       "sha256": hashlib.sha256(data).hexdigest()})
    return shards


def write_manifest(out: Path, manifest: dict) -> None:
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise LabError(f"{folder}: no {MANIFEST} (build a token corpus with: python -m lab data build --out DIR)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise LabError(f"{path}: not JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise LabError(f"{path}: not a token-shard manifest (format must be {FORMAT!r})")
    return manifest


class ShardedStream:
    """One domain's token stream over its memory-mapped shards: length and slices, never the whole.

    `window(start, length)` is the int64 tensor of stream[start:start + length], crossing a shard
    boundary when it has to.
    """

    def __init__(self, folder: Path, shards: list[dict]):
        self.maps = []
        for shard in shards:
            path = folder / shard["file"]
            if not path.is_file() or path.stat().st_size != shard["tokens"] * DTYPE.itemsize:
                raise LabError(f"{path}: missing or not {shard['tokens']} tokens long (rebuild the corpus)")
            if shard["tokens"]:
                self.maps.append(np.memmap(path, dtype=DTYPE, mode="r"))
        self.offsets = np.cumsum([0] + [m.size for m in self.maps])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def window(self, start: int, length: int) -> np.ndarray:
        if not 0 <= start <= len(self) - length:
            raise IndexError(f"window [{start}, {start + length}) outside a stream of {len(self)} tokens")
        k = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pieces, start = [], start - int(self.offsets[k])
        while length > 0:
            piece = self.maps[k][start:start + length]
            pieces.append(piece)
            length -= piece.size
            k, start = k + 1, 0
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]


def _split_entries(folder: Path, split: str) -> dict:
    domains = read_manifest(folder).get("splits", {}).get(split)
    if not domains:
        raise LabError(f"{folder / MANIFEST}: no {split} split")
    return domains


def open_split(folder: str | Path, split: str) -> dict[str, ShardedStream]:
    """Per domain, the memory-mapped token stream of `split` in a shard folder."""
    folder = Path(folder)
    return {domain: ShardedStream(folder, entry["shards"]) for domain, entry in _split_entries(folder, split).items()}


def open_joined(folder: str | Path, split: str = "train", domains=None) -> ShardedStream:
    """All domains of `split` (or those in `domains`, a recipe's `data.domains`) as one stream, domains in the
    manifest's order (what training samples from)."""
    from lab.data import chosen_domains

    folder = Path(folder)
    entries = _split_entries(folder, split)
    return ShardedStream(folder, [s for d in chosen_domains(entries, domains) for s in entries[d]["shards"]])


def check_tokenizer(folder: str | Path, tokenizer_file: Path) -> None:
    """Refuse shards made with another tokenizer than the one a run uses: their ids would mean other text."""
    expected = read_manifest(folder)["tokenizer"]["sha256"]
    if hashlib.sha256(Path(tokenizer_file).read_bytes()).hexdigest() != expected:
        raise LabError(f"{folder}: its shards were made with another tokenizer than {tokenizer_file}")
