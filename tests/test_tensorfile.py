"""The tensor-file decoder trusts nothing: it is exactly as strict as the safetensors library.

safetensors itself is the oracle. Whatever ``safetensors.torch.load`` rejects, ``decode``
rejects with a one-line :class:`FormatError`; whatever it accepts, ``decode`` returns with
the same dtypes, shapes and bytes, except for a few forms we refuse on purpose (below).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_notebook.errors import FormatError
from ckpt_notebook.storage import tensorfile
from ckpt_notebook.types import TensorData

ST_CODE = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
    torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32",
    torch.int64: "I64", torch.float64: "F64", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2", torch.uint16: "U16", torch.uint32: "U32",
    torch.uint64: "U64",
}
# Forms safetensors reads that decode refuses on purpose: dtypes we cannot hold, an entry
# written as a JSON array or with extra keys (serde quirks), and any duplicate JSON key.
DELIBERATE = ("unsupported dtype", "must be a JSON object", "unexpected key", "duplicate key")
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def file_of(header: Any, data: bytes = b"", *, raw: bytes | None = None) -> bytes:
    text = json.dumps(header).encode() if raw is None else raw
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype: str = "F32", shape: list[Any] | None = None,
          offsets: list[Any] | None = None) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [1] if shape is None else shape,
            "data_offsets": [0, 4] if offsets is None else offsets}


def oracle(buf: bytes) -> dict[str, torch.Tensor] | None:
    try:
        return dict(safetensors.torch.load(buf))
    except Exception:
        return None


def as_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def check_against_oracle(buf: bytes) -> None:
    """decode agrees with safetensors, or refuses with FormatError (never anything else)."""
    expected = oracle(buf)
    try:
        got = tensorfile.decode(bytearray(buf), where="fuzz")
    except FormatError as err:
        message = str(err)
        assert message.startswith("fuzz: ") and "\n" not in message, message
        if expected is not None:  # safetensors reads it: we refuse only on purpose
            assert any(reason in message for reason in DELIBERATE), message
        return
    assert expected is not None, f"decode accepted a file safetensors rejects: {buf[:200]!r}"
    assert set(got) == set(expected)
    for key, t in expected.items():
        assert got[key].dtype == ST_CODE[t.dtype]
        assert got[key].shape == tuple(t.shape)
        assert bytes(got[key].data) == as_bytes(t)


def refused(buf: bytes, *words: str) -> str:
    assert oracle(buf) is None, "safetensors reads this file; the test is wrong"
    with pytest.raises(FormatError) as info:
        tensorfile.decode(bytearray(buf), where="blob ab12")
    message = str(info.value)
    assert message.startswith("blob ab12: ") and "\n" not in message
    for word in words:
        assert word in message, message
    return message


# -- what safetensors writes, decode reads -----------------------------------------------------
def test_files_written_by_safetensors_decode_to_the_same_tensors() -> None:
    tensors = {"w": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64),
               "s": torch.tensor(2.5, dtype=torch.bfloat16), "e": torch.zeros(0, 7),
               "m": torch.tensor([True, False])}
    buf = safetensors.torch.save(tensors, metadata={"format": "pt"})
    check_against_oracle(buf)
    got = tensorfile.decode(buf)
    assert got["s"].shape == () and got["e"].shape == (0, 7) and got["m"].dtype == "BOOL"


def test_our_own_files_round_trip_and_safetensors_agrees() -> None:
    data = bytearray(range(24))
    view = memoryview(data)
    tensors = {"a": TensorData("I16", (2, 3), view[:12]), "b": TensorData("U8", (12,), view[12:])}
    for phase in (None, 64):
        buf = b"".join(bytes(c) for c in tensorfile.encode_chunks(tensors, {"k": "v"},
                                                                   phase=phase))
        check_against_oracle(buf)
        got = tensorfile.decode(bytearray(buf))
        assert {k: (t.dtype, t.shape, bytes(t.data)) for k, t in got.items()} == {
            k: (t.dtype, t.shape, bytes(t.data)) for k, t in tensors.items()}


def test_decode_is_zero_copy() -> None:
    buf = bytearray(file_of({"a": entry()}, b"\1\2\3\4"))
    t = tensorfile.decode(buf)["a"]
    buf[-1] = 9
    assert bytes(t.data) == b"\1\2\3\x09"


def test_entries_in_any_order_and_empty_tensors_are_accepted() -> None:
    header = {"b": entry(offsets=[4, 8]), "z": entry(shape=[0], offsets=[8, 8]),
              "a": entry(offsets=[0, 4]), "__metadata__": None}
    buf = file_of(header, bytes(range(8)))
    check_against_oracle(buf)
    assert bytes(tensorfile.decode(buf)["b"].data) == bytes(range(4, 8))
    check_against_oracle(file_of({}))
    check_against_oracle(file_of({"__metadata__": {"a": "b"}}))


# -- the cases of issue 11: each loaded garbage or raised a raw error --------------------------
def test_negative_offsets_are_refused() -> None:
    refused(file_of({"a": entry(offsets=[-4, 0])}, b"\0" * 4), "'a'", "data_offsets")


def test_overlapping_offsets_are_refused() -> None:
    refused(file_of({"a": entry(), "b": entry()}, b"\0" * 4), "overlap")


def test_gaps_and_trailing_bytes_are_refused() -> None:
    refused(file_of({"a": entry(offsets=[4, 8])}, b"\0" * 8), "'a'")
    refused(file_of({"a": entry()}, b"\0" * 8), "8 bytes", "4")


def test_negative_shapes_are_refused() -> None:
    refused(file_of({"a": entry(shape=[-2, -2], offsets=[0, 16])}, b"\0" * 16), "'a'", "shape")


@pytest.mark.parametrize("header", [[1, 2], "x", 3, None])
def test_a_header_that_is_not_an_object_is_refused(header: Any) -> None:
    refused(file_of(header), "JSON object")


@pytest.mark.parametrize("missing", ["dtype", "shape", "data_offsets"])
def test_missing_keys_are_refused(missing: str) -> None:
    spec = entry()
    del spec[missing]
    refused(file_of({"a": spec}, b"\0" * 4), "'a'", missing)


@pytest.mark.parametrize(("field", "value"), [
    ("dtype", ["F32"]), ("dtype", None), ("dtype", "f32"),
    ("shape", None), ("shape", [1.0]), ("shape", [True]), ("shape", "1"), ("shape", [[1]]),
    ("shape", [2**64]), ("data_offsets", [0, 4, 4]), ("data_offsets", [0]),
    ("data_offsets", [0, 4.0]), ("data_offsets", {"0": 0}), ("data_offsets", [False, 4]),
    ("data_offsets", [4, 0]),
])
def test_wrong_types_in_an_entry_are_refused(field: str, value: Any) -> None:
    spec = entry()
    spec[field] = value
    refused(file_of({"a": spec}, b"\0" * 4), "'a'")


@pytest.mark.parametrize("metadata", [[], "x", {"k": 1}, {"k": None}, {"k": ["v"]}])
def test_metadata_must_map_strings_to_strings(metadata: Any) -> None:
    refused(file_of({"__metadata__": metadata, "a": entry()}, b"\0" * 4), "__metadata__")


@pytest.mark.parametrize("raw", [
    b'{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}',  # duplicate field
    b'{"__metadata__":{},"__metadata__":{},"a":' + json.dumps(entry()).encode() + b"}",
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}}',  # -0 is a float to serde
    b'{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]},"b":'
    + json.dumps(entry()).encode() + b"}",
    b'{"__metadata__":{"k":"\\udc00"},"a":' + json.dumps(entry()).encode() + b"}",
    b'{"\\ud800":' + json.dumps(entry()).encode() + b"}",  # a lone surrogate
    b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deeper than any parser's stack
    b'{"a\xff":' + json.dumps(entry()).encode() + b"}",  # not UTF-8
    b'\xef\xbb\xbf{"a":' + json.dumps(entry()).encode() + b"}",  # a byte-order mark
    b'{"a":' + json.dumps(entry()).encode() + b"}\0",  # trailing NUL, not whitespace
    b'{"a":' + json.dumps(entry()).encode() + b",}",
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":NaN}}',
])
def test_json_that_serde_rejects_is_refused(raw: bytes) -> None:
    refused(file_of(None, b"\0" * 4, raw=raw))


@pytest.mark.parametrize("shape", [[2**40, 2**40, 0], [2**61, 1], [2**64 - 1]])
def test_sizes_that_overflow_64_bits_are_refused(shape: list[int]) -> None:
    refused(file_of({"a": entry(dtype="F64", shape=shape, offsets=[0, 0])}), "'a'")


@pytest.mark.parametrize("buf", [
    b"", b"\1\0\0", struct.pack("<Q", 0), struct.pack("<Q", 2**64 - 1) + b"{}",
    struct.pack("<Q", 100_000_001) + b"{}", struct.pack("<Q", 9) + b"{}",
])
def test_a_bad_length_prefix_is_refused(buf: bytes) -> None:
    refused(buf)


@pytest.mark.parametrize("buf", [
    file_of({"a": entry(dtype="C64", shape=[1], offsets=[0, 8])}, b"\0" * 8),
    file_of({"a": ["F32", [1], [0, 4]]}, b"\0" * 4),
    file_of({"a": {**entry(), "extra": 1}}, b"\0" * 4),
    file_of(None, b"\0" * 4, raw=b'{"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"a":'
            + json.dumps(entry()).encode() + b"}"),
])
def test_forms_safetensors_reads_are_refused_on_purpose(buf: bytes) -> None:
    """Dtypes we cannot hold, and JSON forms our writer never makes, named plainly."""
    assert oracle(buf) is not None
    with pytest.raises(FormatError) as info:
        tensorfile.decode(buf, where="blob")
    assert any(reason in str(info.value) for reason in DELIBERATE), str(info.value)


# -- fuzzing -----------------------------------------------------------------------------------
DTYPES = [*ST_CODE.values(), "F4", "C64", "f32", "", "F8_E8M0"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**65, 2**65) | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)


@st.composite
def valid_files(draw: st.DrawFn) -> bytes:
    """A small file written by safetensors itself."""
    tensors = {}
    for i in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from([torch.float32, torch.int16, torch.uint8, torch.bool,
                                      torch.bfloat16, torch.int64]))
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        tensors[f"t{i}"] = torch.zeros(shape, dtype=torch.uint8).to(dtype) + (i % 2)
    metadata = draw(st.none() | st.dictionaries(st.text(max_size=3), st.text(max_size=3),
                                                max_size=2))
    if not tensors and metadata == {}:
        metadata = None  # safetensors 0.8 writes '{},"__metadata__":{}}' for this, unreadable
    return safetensors.torch.save(tensors, metadata=metadata)


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    """Bytes of the header changed, inserted or deleted; the length prefix mostly fixed up
    to match (so that the JSON parser and the checks after it are reached), sometimes not."""
    buf = draw(valid_files())
    n = struct.unpack("<Q", buf[:8])[0]
    text, data = bytearray(buf[8:8 + n]), buf[8 + n:]
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["set", "insert", "delete", "token"]))
        if op == "set" and pos < len(text):
            text[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            text[pos:pos] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del text[pos:pos + draw(st.integers(1, 3))]
        else:
            text[pos:pos] = draw(st.sampled_from([b"0", b"9", b"-", b"-0", b"1e", b".5", b",",
                                                  b'"', b"\\u", b"[", b"}", b" "]))
    prefix = draw(st.sampled_from([struct.pack("<Q", len(text))] * 6 + [buf[:8], b"\1\0"]))
    data = draw(st.sampled_from([data] * 6 + [data[:-1], data + b"\1"]))
    return prefix + bytes(text) + data


@st.composite
def header_mutations(draw: st.DrawFn) -> bytes:
    buf = draw(valid_files())
    n = struct.unpack("<Q", buf[:8])[0]
    header, data = json.loads(buf[8:8 + n]), buf[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from([*names, "__metadata__", "new"]))
        op = draw(st.sampled_from(["replace", "field", "delete", "offsets", "copy"]))
        if op == "delete":
            header.pop(target, None)
        elif op == "replace" or target not in header or not isinstance(header[target], dict):
            header[target] = draw(json_values)
        elif op == "field":
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))
            header[target][field] = draw(json_values)
        elif op == "offsets":
            old = header[target].get("data_offsets")
            if isinstance(old, list) and all(type(o) is int for o in old):
                header[target]["data_offsets"] = [o + draw(st.integers(-5, 5)) for o in old]
        elif op == "copy" and names:
            source = header.get(draw(st.sampled_from(names)))
            header[target] = dict(source) if isinstance(source, dict) else source
    data = data + b"\0" * draw(st.integers(0, 2)) if draw(st.booleans()) else data
    return file_of(header, data)


@st.composite
def structured_files(draw: st.DrawFn) -> bytes:
    """Headers built from parts: right and wrong dtypes, shapes, offsets, gaps, overlaps."""
    if draw(st.integers(0, 9)) == 0:
        return file_of(draw(json_values), draw(st.binary(max_size=8)))
    header: dict[str, Any] = {}
    offset = 0
    for i in range(draw(st.integers(0, 4))):
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(st.integers(-2, 4), max_size=3))
        size = tensorfile.ITEMSIZE.get(dtype, 1)
        for d in shape:
            size *= d
        begin = offset + draw(st.sampled_from([0, 0, 0, -1, 1, -offset]))
        end = begin + size + draw(st.sampled_from([0, 0, 0, 1, -1]))
        spec: dict[str, Any] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        if draw(st.integers(0, 5)) == 0:
            spec.pop(draw(st.sampled_from(sorted(spec))))
        header[draw(st.sampled_from([f"t{i}", f"t{i}", "t0", "__metadata__"]))] = spec
        offset = max(offset, end)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.none() | st.dictionaries(st.text(max_size=3),
                                                                  json_values, max_size=2))
    data = b"\x5a" * max(0, offset + draw(st.sampled_from([0, 0, 0, 1, -1])))
    return file_of(header, data)


@FUZZ
@given(byte_mutations())
def test_fuzz_byte_mutations_of_valid_files(buf: bytes) -> None:
    check_against_oracle(buf)


@FUZZ
@given(header_mutations())
def test_fuzz_header_mutations_of_valid_files(buf: bytes) -> None:
    check_against_oracle(buf)


@FUZZ
@given(structured_files())
def test_fuzz_structured_headers(buf: bytes) -> None:
    check_against_oracle(buf)
