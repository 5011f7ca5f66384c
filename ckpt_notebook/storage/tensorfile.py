"""The safetensors file format, written and read without copies or framework imports.

A file is: 8 bytes little-endian header length N, N bytes of JSON header (padded with
spaces to a multiple of 8; in a blob of one large tensor, further, so that the data begins
64 bytes past a 4 KiB boundary), then the tensors' bytes back to back. The header maps each key
to ``{"dtype", "shape", "data_offsets": [begin, end]}`` relative to the data section.
Every tensor blob in a store is such a file, so ``safetensors.safe_open`` reads any of them.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping

from ..errors import FormatError
from ..types import DATA_ALIGN, TensorData

__all__ = ["ITEMSIZE", "decode", "encode_chunks"]

ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
_MAX_HEADER = 100 * 1024 * 1024


def encode_chunks(tensors: Mapping[str, TensorData],
                  metadata: Mapping[str, str] | None = None, *,
                  phase: int | None = None) -> list[bytes | memoryview]:
    """The file as a list of chunks: the header, then each tensor's own memory (no copy).

    ``phase`` pads the header further, so that the data begins ``phase`` bytes past a
    multiple of :data:`~ckpt_notebook.types.DATA_ALIGN` (for direct I/O without copies)."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    chunks: list[bytes | memoryview] = []
    for key, t in tensors.items():
        end = offset + t.nbytes
        header[key] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, end]}
        chunks.append(t.data.cast("B") if t.data.format != "B" else t.data)
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode()
    pad = -len(raw) % 8 if phase is None else (phase - 8 - len(raw)) % DATA_ALIGN
    raw += b" " * pad
    return [struct.pack("<Q", len(raw)) + raw, *chunks]


def decode(buf: bytearray | bytes | memoryview, *, where: str = "blob") -> dict[str, TensorData]:
    """Parse a safetensors file held in ``buf``; the returned views share its memory."""
    view = memoryview(buf)
    if view.nbytes < 8:
        raise FormatError(f"{where}: not a safetensors file (only {view.nbytes} bytes)")
    (n,) = struct.unpack("<Q", view[:8])
    if n > _MAX_HEADER or 8 + n > view.nbytes:
        raise FormatError(f"{where}: not a safetensors file (header length {n} is impossible)")
    try:
        header = json.loads(bytes(view[8:8 + n]))
    except ValueError as err:
        raise FormatError(f"{where}: safetensors header is not valid JSON ({err})") from err
    data = view[8 + n:]
    out: dict[str, TensorData] = {}
    for key, spec in header.items():
        if key == "__metadata__":
            continue
        begin, end = spec["data_offsets"]
        dtype = spec["dtype"]
        shape = tuple(int(s) for s in spec["shape"])
        if dtype not in ITEMSIZE or end - begin != math.prod(shape) * ITEMSIZE[dtype] \
                or end > data.nbytes:
            raise FormatError(f"{where}: tensor {key!r} has inconsistent dtype/shape/offsets")
        out[key] = TensorData(dtype, shape, data[begin:end])
    return out
