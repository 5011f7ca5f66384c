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
import operator
import struct
from collections import Counter
from collections.abc import Mapping
from itertools import chain
from typing import Any

from ..errors import FormatError
from ..types import DATA_ALIGN, TensorData

__all__ = ["ITEMSIZE", "decode", "encode_chunks"]

ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit (MAX_HEADER_SIZE)
_U64 = 2**64 - 1
_FIELDS = frozenset(("dtype", "shape", "data_offsets"))
_INT, _STR, _LIST, _DICT = (frozenset((t,)) for t in (int, str, list, dict))
_TWO, _THREE = frozenset((2,)), frozenset((3,))
_FIELD_VALUES = tuple(map(operator.itemgetter, ("dtype", "shape", "data_offsets")))


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
    """Parse a safetensors file held in ``buf``; the returned views share its memory.

    As strict as the safetensors library (its Rust ``read_metadata`` and ``Metadata::validate``,
    serde's typing included): a file it rejects is a one-line :class:`FormatError` here, never
    a raw ``KeyError``/``TypeError`` or a view of the wrong bytes. A file it reads decodes to
    the same tensors, except for forms our writer never makes and that we refuse on purpose:
    dtypes :data:`ITEMSIZE` lacks, an entry written as a JSON array or with keys besides
    dtype/shape/data_offsets, and any duplicate JSON key. Nothing is done per byte of data,
    and the header is checked with C-level calls over all tensors at once (:func:`_tensors`)."""
    view = memoryview(buf)
    if view.nbytes < 8:
        raise FormatError(f"{where}: not a safetensors file (only {view.nbytes} bytes)")
    (n,) = struct.unpack_from("<Q", view)
    if n > _MAX_HEADER or 8 + n > view.nbytes:
        raise FormatError(f"{where}: not a safetensors file (header length {n} is impossible "
                          f"in a file of {view.nbytes} bytes)")
    header = _parse_header(view[8:8 + n], where)
    _check_metadata(header.pop("__metadata__", None), where)
    data = view[8 + n:]
    tensors = _tensors(header, data)
    if tensors is None:
        raise _bad(where, _problem(header, data.nbytes))
    return tensors


def _bad(where: str, problem: str) -> FormatError:
    return FormatError(f"{where}: not a valid safetensors file: {problem}; it was damaged or "
                       "made by hand, so it cannot be read (use another checkpoint)")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        dup = Counter(k for k, _ in pairs).most_common(1)[0][0]
        raise ValueError(f"duplicate key {dup[:80]!r}")
    return out


def _no_minus_zero(text: str) -> int:
    if text == "-0":  # serde reads it as a float; other negatives are refused per tensor
        raise ValueError("-0 is not an unsigned integer")
    return int(text)


def _parse_header(raw: memoryview, where: str) -> dict[str, Any]:
    try:
        text = str(raw, "utf-8")
        hooks: dict[str, Any] = {"parse_int": _no_minus_zero} if "-0" in text else {}
        header = json.loads(text, object_pairs_hook=_unique, **hooks)
        if "\\u" in text:  # escapes may hide lone surrogates, which serde refuses
            json.dumps(header, ensure_ascii=False).encode()
    except (ValueError, RecursionError) as err:  # UnicodeError and JSONDecodeError included
        raise _bad(where, f"its header is not valid JSON ({str(err)[:120]})") from err
    if type(header) is not dict:
        raise _bad(where, f"its header must be a JSON object, not {_kind(header)}")
    return header


def _check_metadata(spec: Any, where: str) -> None:
    if spec is None:
        return
    if type(spec) is not dict or not _STR.issuperset(map(type, spec.values())):
        raise _bad(where, "__metadata__ must map strings to strings")


def _tensors(specs: dict[str, Any], data: memoryview) -> dict[str, TensorData] | None:
    """The tensors, or ``None`` if anything is wrong (then :func:`_problem` says what).

    Every rule is checked for all entries at once with C-level calls (``map``, ``min``,
    ``sorted``, list equality): a Python loop over 10,000 entries doubled decode's time."""
    values = list(specs.values())
    if not (_DICT.issuperset(map(type, values)) and _THREE.issuperset(map(len, values))
            and all(map(_FIELDS.issuperset, values))):
        return None
    dtypes, shapes, offsets = (list(map(_get, values)) for _get in _FIELD_VALUES)
    if not (_STR.issuperset(map(type, dtypes)) and ITEMSIZE.keys() >= set(dtypes)
            and _LIST.issuperset(map(type, shapes)) and _LIST.issuperset(map(type, offsets))
            and _TWO.issuperset(map(len, offsets))):
        return None
    flat = list(chain.from_iterable(offsets))
    if not (_naturals(list(chain.from_iterable(shapes))) and _naturals(flat)):
        return None
    begins, ends = flat[0::2], flat[1::2]
    sizes = list(map(operator.mul, map(math.prod, shapes), map(ITEMSIZE.__getitem__, dtypes)))
    if list(map(operator.sub, ends, begins)) != sizes or (sizes and max(sizes) * 8 > _U64) \
            or (0 in sizes and None in map(_nbytes, shapes, dtypes)):
        return None
    if not _tiles(begins, ends, data.nbytes):
        spans = sorted(zip(begins, ends, strict=True))  # other writers order by name
        if not _tiles([b for b, _ in spans], [e for _, e in spans], data.nbytes):
            return None
    views = map(data.__getitem__, map(slice, begins, ends))
    return dict(zip(specs, map(TensorData, dtypes, map(tuple, shapes), views), strict=True))


def _tiles(begins: list[int], ends: list[int], size: int) -> bool:
    """The spans ``begins[i]:ends[i]``, in this order, cover ``[0, size)`` exactly: no
    overlap, no gap, nothing after the last one (the library's ``validate`` and its
    full-coverage check). Spans that pass in file order are also in the library's sorted
    order (each begins where the one before ends), so the sort is needed only otherwise."""
    if not begins:
        return size == 0
    return begins[0] == 0 and begins[1:] == ends[:-1] and ends[-1] == size


def _problem(specs: dict[str, Any], size: int) -> str:
    """What :func:`_tensors` refused, entry by entry: slow, but only on the way to an error."""
    for key, spec in specs.items():
        problem = _entry_problem(spec)
        if problem:
            return f"tensor {key[:80]!r} {problem}"
    spans = sorted((s["data_offsets"][0], s["data_offsets"][1], k) for k, s in specs.items())
    start = 0
    for begin, end, key in spans:
        if begin != start:
            how = "overlaps the tensor before it" if begin < start else \
                f"leaves a gap of {begin - start} bytes before it"
            return f"tensor {key[:80]!r} at data_offsets [{begin}, {end}] {how}"
        start = end
    return f"its data section has {size} bytes but its tensors cover {start}"


def _naturals(value: Any) -> bool:
    """A JSON list of integers that fit a u64 (``bool`` and ``float`` are not integers)."""
    return type(value) is list and _INT.issuperset(map(type, value)) \
        and (not value or (min(value) >= 0 and max(value) <= _U64))


def _nbytes(shape: list[int], dtype: str) -> int | None:
    """The tensor's size in bytes, or ``None`` where the library's checked usize arithmetic
    overflows (``[2**40, 2**40, 0]`` overflows before the 0 is reached)."""
    itemsize = ITEMSIZE[dtype]
    count = math.prod(shape)
    if count == 0:
        running = 1
        for d in shape:
            running *= d
            if running > _U64:
                return None
    return None if count * itemsize * 8 > _U64 else count * itemsize


def _entry_problem(spec: Any) -> str:
    if type(spec) is not dict:
        return f"must be a JSON object with dtype, shape and data_offsets, not {_kind(spec)}"
    if spec.keys() != _FIELDS:
        missing, extra = sorted(_FIELDS - spec.keys()), sorted(spec.keys() - _FIELDS)
        return f"lacks {', '.join(missing)}" if missing else \
            f"has an unexpected key {extra[0][:40]!r}"
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if type(dtype) is not str or dtype not in ITEMSIZE:
        return f"has an unsupported dtype {str(dtype)[:20]!r} (supported: {', '.join(ITEMSIZE)})"
    if not _naturals(shape):
        return f"has a bad shape {str(shape)[:60]} (a list of non-negative integers is needed)"
    if not _naturals(offsets) or len(offsets) != 2:
        return f"has bad data_offsets {str(offsets)[:60]} (two non-negative integers are needed)"
    nbytes = _nbytes(shape, dtype)
    if nbytes is None:
        return f"is too large: the size of shape {shape} overflows 64 bits"
    if offsets[1] - offsets[0] != nbytes:
        return (f"has data_offsets {offsets} that do not hold its {nbytes} bytes ({dtype} of "
                f"shape {shape})")
    return ""


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null",
            bool: "a boolean"}.get(type(value), "a number")
