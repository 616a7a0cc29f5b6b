"""A safetensors writer that takes tensors one at a time.

The safetensors format is an 8-byte little-endian header length, a JSON header giving each tensor's
dtype, shape and byte range, then the raw bytes. Since every shape is known in advance, the header is
written first and each tensor is made, written and dropped in turn: peak memory is the largest tensor,
not the file. The files are the ones `safetensors.torch.save_file` writes (checked in the tests).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

_DTYPE_CODES = {
    torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class TensorEntry:
    """A tensor to be written: its name, shape and dtype now, its values when `make()` is called."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def write_safetensors(path: Path, entries: Iterable[TensorEntry], metadata: dict[str, str] | None = None,
                      on_tensor: Callable[[TensorEntry], None] | None = None) -> None:
    """Write `entries` to one safetensors file, making each tensor only when its turn comes.

    Each made tensor must have the declared shape and dtype (checked: a mismatch is a bug upstream).
    """
    entries = list(entries)
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for e in entries:
        header[e.name] = {"dtype": _DTYPE_CODES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for e in entries:
            tensor = e.make()
            if tuple(tensor.shape) != e.shape or tensor.dtype != e.dtype:
                raise RuntimeError(f"{e.name}: made {tuple(tensor.shape)} {tensor.dtype}, declared {e.shape} {e.dtype}")
            if e.nbytes:
                f.write(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
            if on_tensor is not None:
                on_tensor(e)
            del tensor
