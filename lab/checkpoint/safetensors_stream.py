"""A safetensors writer that takes tensors one at a time.

The safetensors format is an 8-byte little-endian header length, a JSON header giving each tensor's
dtype, shape and byte range, then the raw bytes. Since every shape is known in advance, the header is
written first and each tensor is made, written and dropped in turn: peak memory is the largest tensor,
not the file. Given its tensors in the order `safetensors.torch.save_file` puts them (by name, for one
dtype), a file is byte for byte the one it writes (checked in the tests).

A tensor's bytes go to the file straight from its memory, with no copy on the way (no `bytes` object, no
buffered writer's chunks), from a second thread while the next tensor is made (`WriteBehind`), each at its
own offset: tensors may be made in another order than the header's (`making_order`), and the file's
bytes are the same.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from collections import deque
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
    for e, offset in zip(entries, data_offsets(entries)):
        header[e.name] = {"dtype": _DTYPE_CODES[e.dtype], "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def data_offsets(entries: list[TensorEntry], start: int = 0) -> list[int]:
    """Where each entry's bytes start, the first at `start`: 0 in the header's terms (from the end of the
    header), the header's length in the file's."""
    offsets, offset = [], start
    for e in entries:
        offsets.append(offset)
        offset += e.nbytes
    return offsets


def making_order(entries: list[TensorEntry]) -> list[int]:
    """The order to make a file's tensors in: smallest first, the header's order among equal sizes.

    Why: the writer has bytes to write as soon as the first tensor is made, and while the largest are made
    (a grown model's embedding and LM head, 64 MiB each in the growth benchmark, made on fresh pages: the
    kernel faulting in and zeroing 4 KiB at a time) it works through the smaller tensors queued before them
    (`WriteBehind`). Made first, in the header's order, they took 51 and 57 ms while the writer had nothing
    to write: 0.13 s of a 0.63 s growth; made last, the writer waited 40-50 ms in all. Equal sizes keep
    their order, so a layer's repeats stay next to each other for the memo."""
    return sorted(range(len(entries)), key=lambda i: entries[i].nbytes)


def write_safetensors(path: Path, entries: Iterable[TensorEntry], metadata: dict[str, str] | None = None,
                      on_tensor: Callable[[TensorEntry], None] | None = None,
                      order: Iterable[int] | None = None) -> None:
    """Write `entries` to one safetensors file, making each tensor only when its turn comes.

    The header lists the entries in their given order; `order` gives the indices of `entries` in the order
    their tensors are made and written (default: the header's), each to its own offset. Each made tensor
    must have the declared shape and dtype (checked: a mismatch is a bug upstream). `on_tensor(entry)` is
    called once the entry's tensor is made and handed to the writing thread.
    """
    entries = list(entries)
    order = range(len(entries)) if order is None else list(order)
    if sorted(order) != list(range(len(entries))):
        raise ValueError(f"{path}: order {order} is not a permutation of the {len(entries)} entries")
    header = safetensors_header(entries, metadata)
    offsets = data_offsets(entries, len(header))
    with open(path, "wb", buffering=0) as f:
        write_all(f, memoryview(header), 0)
        with WriteBehind(f, queued_bytes=2 * max((e.nbytes for e in entries), default=0)) as writer:
            for i in order:
                e = entries[i]
                tensor = e.make()
                if tuple(tensor.shape) != e.shape or tensor.dtype != e.dtype:
                    raise RuntimeError(f"{e.name}: made {tuple(tensor.shape)} {tensor.dtype}, declared {e.shape} {e.dtype}")
                if e.nbytes:
                    writer.write(tensor_bytes(tensor), offsets[i])
                if on_tensor is not None:
                    on_tensor(e)
                del tensor


class WriteBehind:
    """Writes buffers to an open file, each at its offset, from a second thread, while the caller makes the
    next one.

    Buffers (views of tensors' memory, which they keep alive) wait in a queue of at most `queued_bytes`
    (one buffer at least, whatever its size): the caller blocks beyond it, so memory holds a few tensors,
    never the file. A bound in bytes rather than buffers lets many small tensors queue up, so the writer
    still has work while a large one is made. Leaving the `with` block waits for every buffer to be
    written and raises what writing raised; leaving it on an error drops the rest.
    """

    def __init__(self, f, queued_bytes: int = 0):
        self._f = f
        self._limit = queued_bytes
        self._queue: deque[tuple[memoryview, int] | None] = deque()
        self._queued = 0  # bytes in the queue
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="safetensors-writer", daemon=True)

    def __enter__(self) -> "WriteBehind":
        self._thread.start()
        return self

    def write(self, data: memoryview, offset: int) -> None:
        self._raise_if_failed()
        with self._changed:
            self._changed.wait_for(lambda: not self._queue or self._queued + len(data) <= self._limit)
            self._queue.append((data, offset))
            self._queued += len(data)
            self._changed.notify_all()

    def __exit__(self, kind, error, tb) -> None:
        self._cancelled = kind is not None
        with self._changed:
            self._queue.append(None)
            self._changed.notify_all()
        self._thread.join()
        if kind is None:
            self._raise_if_failed()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue))
                item = self._queue[0]
            if item is None:
                return
            if self._error is None and not self._cancelled:
                try:
                    write_all(self._f, *item)
                except BaseException as e:  # handed to the caller's thread, raised at its next write or exit
                    self._error = e
            with self._changed:  # dequeued only once written: the queue's bytes count the one being written
                self._queue.popleft()
                self._queued -= len(item[0])
                self._changed.notify_all()
            del item  # the tensor's memory goes as soon as it is written

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


def write_all(f, data: memoryview, offset: int) -> None:
    """Write all of `data` to the file `f` from byte `offset` on, in calls of at most `WRITE_CALL_BYTES` (a call
    may also write less than it is given); `f`'s own position is left alone."""
    fd, done = f.fileno(), 0
    while done < len(data):
        done += os.pwrite(fd, data[done:done + WRITE_CALL_BYTES], offset + done)
