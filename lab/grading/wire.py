"""The messages between the trusted grader and the student's process: JSON plus raw tensor bytes, never pickle.

A message is a JSON header and a blob: `struct "<QQ"` (header length, blob length), the header (UTF-8
JSON), then the blob, a safetensors file of uint8 tensors, one per tensor *storage*. A tensor travels
as (storage, offset, size, stride, dtype), so views keep sharing memory on the other side: an
`.expand()`ed result still refuses an in-place write, and a returned layer that is the argument's own
weight still changes with it. Reading a message from the student's side trusts nothing: lengths,
dtypes, offsets and strides are checked before any tensor is made, and objects are only ever the
plain JSON types, tensors, and the lab modules `lab.grading.lab_objects` rebuilds from their tensors.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from typing import Any, Callable

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

MAX_HEADER_BYTES = 16 << 20
MAX_BLOB_BYTES = 1 << 30
MAX_DEPTH = 32

DTYPES = {name: getattr(torch, name) for name in (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


class WireError(Exception):
    """A message that is not what the protocol allows (garbled, too big, or an unsupported value)."""


class Timeout(Exception):
    """The other side did not answer before the deadline."""


class Closed(Exception):
    """The other side closed its end (its process ended)."""


# ---------------------------------------------------------------- framing


def write_message(fd: int, header: dict, blob: bytes = b"", deadline: float | None = None) -> None:
    """Write one message; with a `deadline` the fd must be non-blocking (a reader that stops reading
    cannot hold the writer past it)."""
    data = json.dumps(header).encode("utf-8")
    payload = struct.pack("<QQ", len(data), len(blob)) + data + blob
    view = memoryview(payload)
    while view:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([], [fd], [], wait)[1]:
                raise Timeout()
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            continue
        except BrokenPipeError:
            raise Closed() from None
        view = view[written:]


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise Timeout()
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise Closed()
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, deadline: float | None = None) -> tuple[dict, bytes]:
    """The next (header, blob) from `fd`; Timeout past `deadline` (time.monotonic), Closed at end of file."""
    header_len, blob_len = struct.unpack("<QQ", _read_exactly(fd, 16, deadline))
    if header_len > MAX_HEADER_BYTES or blob_len > MAX_BLOB_BYTES:
        raise WireError(f"a message of {header_len + blob_len} bytes is over the limit")
    try:
        header = json.loads(_read_exactly(fd, header_len, deadline).decode("utf-8"))
    except ValueError as e:
        raise WireError(f"a garbled message ({e})") from None
    if not isinstance(header, dict):
        raise WireError("a message header that is not a JSON object")
    return header, _read_exactly(fd, blob_len, deadline)


# ---------------------------------------------------------------- values

# A lab object (an MLP, an Attention, a DecoderLM) is encoded by `lab_objects`, which calls back into the
# encoder for its tensors; these hooks keep this module free of the lab's model code.
ObjectEncoder = Callable[[Any, "Encoder"], "dict | None"]
ObjectDecoder = Callable[[dict, "Decoder"], Any]


class Encoder:
    """Turns values into JSON-able trees, collecting the bytes of every tensor storage once."""

    def __init__(self, encode_object: ObjectEncoder | None = None):
        self.encode_object = encode_object
        self.storages: list[torch.Tensor] = []  # uint8 views of whole storages
        self._index: dict[tuple[int, int], int] = {}

    def storage_index(self, storage: torch.UntypedStorage) -> int:
        key = (storage.data_ptr(), storage.nbytes())
        if key not in self._index or key == (0, 0):
            self._index[key] = len(self.storages)
            self.storages.append(torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),), (1,)))
        return self._index[key]

    def tensor(self, t: torch.Tensor) -> dict:
        if t.dtype not in DTYPE_NAMES:
            raise WireError(f"a tensor of dtype {t.dtype} cannot be sent (use float32, bfloat16, int64, bool...)")
        requires_grad = bool(t.requires_grad)
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        return {"tensor": {"storage": self.storage_index(t.untyped_storage()), "offset": t.storage_offset(),
                           "size": list(t.shape), "stride": list(t.stride()), "dtype": DTYPE_NAMES[t.dtype],
                           "requires_grad": requires_grad}}

    def value(self, v: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise WireError("a value nested too deeply")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return v if math.isfinite(v) else {"float": repr(v)}
        if isinstance(v, torch.Tensor):
            return self.tensor(v)
        if isinstance(v, torch.Size):
            return {"tuple": [int(x) for x in v]}
        if isinstance(v, tuple):
            return {"tuple": [self.value(x, depth + 1) for x in v]}
        if isinstance(v, list):
            return [self.value(x, depth + 1) for x in v]
        if isinstance(v, dict):
            if not all(isinstance(k, (str, int)) for k in v):
                raise WireError("a dict whose keys are not strings or integers")
            return {"dict": [[k, self.value(x, depth + 1)] for k, x in v.items()]}
        if self.encode_object is not None:
            encoded = self.encode_object(v, self)
            if encoded is not None:
                return encoded
        if hasattr(v, "item") and callable(v.item) and type(v).__module__ == "numpy":
            return self.value(v.item(), depth + 1)
        raise WireError(f"a value of type {type(v).__name__} cannot be sent back to the grader")

    def blob(self) -> bytes:
        return save_safetensors({f"s{i}": s.contiguous() if s.numel() else s.clone() for i, s in enumerate(self.storages)})


class Decoder:
    """Rebuilds values from a tree and a blob, checking every tensor against the storage it claims."""

    def __init__(self, tree_storages: list[torch.Tensor], decode_object: ObjectDecoder | None = None):
        self.storages = tree_storages
        self.decode_object = decode_object

    @classmethod
    def from_blob(cls, blob: bytes, decode_object: ObjectDecoder | None = None) -> "Decoder":
        try:
            loaded = load_safetensors(blob) if blob else {}
        except Exception as e:  # noqa: BLE001 - whatever the parser says, the message is garbled
            raise WireError(f"garbled tensor bytes ({type(e).__name__})") from None
        storages = []
        for i in range(len(loaded)):
            s = loaded.get(f"s{i}")
            if s is None or s.dtype != torch.uint8 or s.dim() != 1:
                raise WireError("garbled tensor bytes (storages out of order)")
            storages.append(s.clone())  # each its own memory, writable
        return cls(storages, decode_object)

    def tensor(self, spec: Any) -> torch.Tensor:
        if not isinstance(spec, dict):
            raise WireError("a garbled tensor")
        index, offset, size, stride = spec.get("storage"), spec.get("offset"), spec.get("size"), spec.get("stride")
        dtype = DTYPES.get(spec.get("dtype"))
        ints = lambda xs: isinstance(xs, list) and len(xs) <= 16 and all(type(x) is int and x >= 0 for x in xs)
        if (dtype is None or type(index) is not int or not 0 <= index < len(self.storages) or type(offset) is not int
                or offset < 0 or not ints(size) or not ints(stride) or len(size) != len(stride)):
            raise WireError("a garbled tensor")
        storage = self.storages[index]
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if 0 in size:
            extent = 0
        else:
            extent = (offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1) * itemsize
        if extent > storage.numel():
            raise WireError("a tensor that reaches past its storage")
        t = torch.empty(0, dtype=dtype).set_(storage.untyped_storage(), offset, size, stride)
        if spec.get("requires_grad") is True and (dtype.is_floating_point or dtype.is_complex):
            t.requires_grad_(True)
        return t

    def value(self, v: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise WireError("a value nested too deeply")
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.value(x, depth + 1) for x in v]
        if not isinstance(v, dict) or len(v) != 1:
            raise WireError("a garbled value")
        (kind, body), = v.items()
        if kind == "tensor":
            return self.tensor(body)
        if kind == "tuple" and isinstance(body, list):
            return tuple(self.value(x, depth + 1) for x in body)
        if kind == "dict" and isinstance(body, list):
            if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], (str, int)) for p in body):
                raise WireError("a garbled dict")
            return {k: self.value(x, depth + 1) for k, x in body}
        if kind == "float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if kind == "object" and self.decode_object is not None and isinstance(body, dict):
            return self.decode_object(body, self)
        raise WireError(f"a value of an unknown kind {kind!r}")
