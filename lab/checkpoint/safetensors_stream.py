"""A safetensors writer that takes tensors one at a time.

The safetensors format is an 8-byte little-endian header length, a JSON header giving each tensor's
dtype, shape and byte range, then the raw bytes. Since every shape is known in advance, the header is
written first and each tensor is made, written and dropped in turn: peak memory is the largest tensor,
not the file. Given its tensors in the order `safetensors.torch.save_file` puts them (by name, for one
dtype), a file is byte for byte the one it writes (checked in the tests).

A tensor's bytes go to the file straight from its memory, with no copy on the way (no `bytes` object, no
buffered writer's chunks), from a second thread while the next tensor is made (`WriteBehind`).
"""

from __future__ import annotations

import json
import math
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterable

import torch

_DTYPE_CODES = {
    torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class TensorEntry:
    """A tensor to be written: its name, shape and dtype now, its values when `make()` is called. Entries
    with the same `key` (when it is not None) hold the same values (`lab.checkpoint.memo`)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]
    key: Hashable = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def safetensors_header(entries: list[TensorEntry], metadata: dict[str, str] | None = None) -> bytes:
    """The length prefix and JSON header of a file of `entries`, in their order, padded so the data starts
    8-byte aligned."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for e in entries:
        header[e.name] = {"dtype": _DTYPE_CODES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: Path, entries: Iterable[TensorEntry], metadata: dict[str, str] | None = None,
                      on_tensor: Callable[[TensorEntry], None] | None = None) -> None:
    """Write `entries` to one safetensors file, making each tensor only when its turn comes.

    Each made tensor must have the declared shape and dtype (checked: a mismatch is a bug upstream).
    `on_tensor(entry)` is called once the entry's tensor is made and handed to the writing thread.
    """
    entries = list(entries)
    with open(path, "wb", buffering=0) as f:
        write_all(f, memoryview(safetensors_header(entries, metadata)))
        with WriteBehind(f) as writer:
            for e in entries:
                tensor = e.make()
                if tuple(tensor.shape) != e.shape or tensor.dtype != e.dtype:
                    raise RuntimeError(f"{e.name}: made {tuple(tensor.shape)} {tensor.dtype}, declared {e.shape} {e.dtype}")
                if e.nbytes:
                    writer.write(tensor_bytes(tensor))
                if on_tensor is not None:
                    on_tensor(e)
                del tensor


class WriteBehind:
    """Writes buffers to an open file in order, from a second thread, while the caller makes the next one.

    A buffer (a view of a tensor's memory, which it keeps alive) waits in a queue of `depth` at most: the
    caller blocks beyond it, so memory holds a few tensors, never the file. Leaving the `with` block waits
    for every buffer to be written and raises what writing raised; leaving it on an error drops the rest.
    """

    def __init__(self, f, depth: int = 1):
        self._f = f
        self._queue: queue.Queue[memoryview | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="safetensors-writer", daemon=True)

    def __enter__(self) -> "WriteBehind":
        self._thread.start()
        return self

    def write(self, data: memoryview) -> None:
        self._raise_if_failed()
        self._queue.put(data)

    def __exit__(self, kind, error, tb) -> None:
        self._cancelled = kind is not None
        self._queue.put(None)
        self._thread.join()
        if kind is None:
            self._raise_if_failed()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None and not self._cancelled:
                try:
                    write_all(self._f, data)
                except BaseException as e:  # handed to the caller's thread, raised at its next write or exit
                    self._error = e
            del data  # the tensor's memory goes as soon as it is written

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of `tensor` in row-major order, a view of its own memory when it is contiguous on the CPU."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


# The most one write call passes. Measured on Linux 6.18 (ext4, a virtual machine): the same bytes written
# into the page cache in calls of several MB took up to ten times as long as in calls of 256 KB, which are
# as fast as the kernel copying a file; a call costs microseconds, so smaller ones lose nothing elsewhere.
WRITE_CALL_BYTES = 256 * 1024


def write_all(f, data: memoryview) -> None:
    """Write all of `data` to the unbuffered file `f`, in calls of at most `WRITE_CALL_BYTES` (a call may
    also write less than it is given)."""
    done = 0
    while done < len(data):
        done += f.write(data[done:done + WRITE_CALL_BYTES])
