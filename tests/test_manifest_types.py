"""The typed manifest: every record kind round-trips through JSON, malformed records are
refused, and encoding writes exactly the bytes earlier versions wrote."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from ckpt_notebook.errors import FormatError, UnsafePathError
from ckpt_notebook.storage.manifest import (
    OBJECT_KINDS,
    FileRecord,
    Manifest,
    PickleRecord,
    SavedObject,
    TensorRecord,
    TensorRecords,
    decode,
    encode,
)
from ckpt_notebook.storage.trust import DIGEST_KEY
from ckpt_notebook.types import CheckpointInfo

GOLDEN = Path(__file__).parent / "golden"
A, B, C = "a" * 64, "b" * 64, "c" * 64
BLOBS = {A: 1052672, B: 4096, C: 77}
VERSIONS = {"python": "3.11.7", "ckpt_notebook": "0.1.0", "torch": "2.13.0+cpu"}


def _tensor(path: str, shape: tuple[int, ...], blob: str, key: str, digest: str | None = None,
            array: str = "torch") -> TensorRecord:
    dtype, size = ("F32", 4) if array == "torch" else ("I64", 8)
    n = size
    for d in shape:
        n *= d
    return TensorRecord(path, dtype, shape, array, "cpu", blob, key,  # type: ignore[arg-type]
                        BLOBS[blob], n, digest)


def state_manifest() -> Manifest:
    """What tests/golden/encoded/state.json holds (written by the encoder before the types)."""
    info = CheckpointInfo(id="20261123-070650-20afb4", run="demo", step=30, epoch=2,
                          created="2026-11-23T07:06:50.123456+00:00",
                          metrics={"loss": 0.1594, "acc": None, "n": 3}, tags=("good", "x"),
                          parent="20261123-070649-0958f4",
                          objects=("model", "optimizer", "cfg", "arr", "rng"),
                          logical_bytes=5000, new_bytes=1200, notebook="/path/train.ipynb")
    objects = {
        "model": SavedObject("module", "torch.nn.modules.container.Sequential",
                             {"0.weight": {"__tensor__": 0}, "0.bias": {"__tensor__": 1}},
                             (_tensor("0.weight", (512, 512), A, "t", A),
                              _tensor("0.bias", (512,), B, "0", "d" * 64))),
        "optimizer": SavedObject(
            "optimizer", "torch.optim.adam.Adam",
            {"state": {"__dict__": [[0, {"step": {"__tensor__": 0}}]]},
             "param_groups": [{"lr": 0.01, "betas": {"__tuple__": [0.9, 0.999]},
                               "params": [0]}]},
            (_tensor("state.0.step", (), B, "1"),)),
        "cfg": SavedObject("value", "builtins.dict", {"lr": 0.01, "fn": {"__pickle__": 0}},
                           pickles=(PickleRecord("fn", C, 77),)),
        "arr": SavedObject("value", "numpy.ndarray", {"__ndarray__": 0},
                           (_tensor("", (3,), B, "2", "e" * 64, array="numpy"),)),
        "rng": SavedObject("rng", "rng", {"python": {"__tuple__": [3, 1]}}),
    }
    return Manifest(info, BLOBS, objects, library_versions=VERSIONS)


def files_manifest() -> Manifest:
    """What tests/golden/encoded/files.json holds."""
    info = CheckpointInfo(id="project-v1", name="project-v1", kind="files",
                          created="2026-11-23T07:07:17.668767+00:00", logical_bytes=1077,
                          new_bytes=1000, source="/home/me/project")
    files = {"README.md": FileRecord(A, 1052672, False), "bin/run.sh": FileRecord(C, 77, True)}
    return Manifest(info, {A: 1052672, C: 77}, {}, files, VERSIONS)


@pytest.mark.parametrize(("name", "build"), [("state", state_manifest), ("files", files_manifest)])
def test_encoding_writes_the_bytes_earlier_versions_wrote(name: str, build: Any) -> None:
    golden = (GOLDEN / "encoded" / f"{name}.json").read_bytes()
    assert encode(build()) == golden
    assert decode(golden, where=name) == build()
    assert encode(decode(golden, where=name)) == golden


def _records() -> list[Any]:
    state, files = state_manifest(), files_manifest()
    objects = list(state.objects.values())
    return [*objects, *(t for o in objects for t in o.tensors),
            *(p for o in objects for p in o.pickles), *(files.files or {}).values(),
            state, files]


def _from_json(record: Any, data: dict[str, Any]) -> Any:
    at = "test"
    if isinstance(record, TensorRecord):
        return TensorRecord.from_json(data, BLOBS, at=at)
    if isinstance(record, PickleRecord):
        return PickleRecord.from_json(data, BLOBS, at=at)
    if isinstance(record, FileRecord):
        return FileRecord.from_json("some/file", data, BLOBS, where=at)
    if isinstance(record, SavedObject):
        return SavedObject.from_json("obj", data, BLOBS, where=at)
    return Manifest.from_json(data, where=at)


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).__name__)
def test_every_record_kind_round_trips(record: Any) -> None:
    data = record.to_json()
    again = _from_json(record, json.loads(json.dumps(data)))
    assert again == record
    assert again.to_json() == data
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, dataclasses.fields(record)[0].name, None)


def test_optional_parts_stay_absent() -> None:
    """A tensor without a digest (written before digests) and an object without pickles
    write no such keys, so a copy of an old checkpoint says what its source said."""
    t = _tensor("w", (2,), B, "0")
    assert "digest" not in t.to_json()
    assert "pickles" not in SavedObject("module", "m", {}, (t,)).to_json()
    assert "files" not in state_manifest().to_json()


def test_the_golden_v1_manifest_reads_into_records() -> None:
    doc = decode((GOLDEN / "v1" / "manifests" / "golden-v1.json").read_bytes(), where="golden")
    assert doc.checkpoint.id == "golden-v1" and doc.files is None
    assert {n: o.kind for n, o in doc.objects.items()} == {
        "model": "module", "optimizer": "optimizer", "cfg": "value", "arr": "value"}
    weight = doc.objects["model"].tensors[0]
    assert (weight.path, weight.shape, weight.digest, weight.nbytes) == ("0.weight", (8, 4),
                                                                          None, 128)
    assert doc.objects["arr"].tensors[0].array == "numpy"
    assert set(OBJECT_KINDS) >= {o.kind for o in doc.objects.values()}


def test_tensor_records_are_built_on_first_use_and_equal_a_tuple() -> None:
    model = state_manifest().objects["model"]
    lazy = TensorRecords([t.to_json() for t in model.tensors])
    assert len(lazy) == 2 and lazy._records is None  # counted without building
    assert lazy == tuple(model.tensors) and tuple(model.tensors) == lazy
    assert lazy[1] == model.tensors[1] and list(lazy) == list(model.tensors)
    assert lazy != (model.tensors[0],)


# -- malformed records -----------------------------------------------------------------------
def _tensor_json(**change: Any) -> dict[str, Any]:
    data = _tensor("w", (2, 3), B, "0", "d" * 64).to_json()
    data.update(change)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize("data", [
    _tensor_json(dtype="F99"), _tensor_json(dtype=["F32"]), _tensor_json(shape=[2, -3]),
    _tensor_json(shape=[2, True]), _tensor_json(shape="23"), _tensor_json(nbytes=25),
    _tensor_json(nbytes=24.0), _tensor_json(array="jax"), _tensor_json(blob=A),
    _tensor_json(blob=C * 2), _tensor_json(blob_size=4095), _tensor_json(blob_size=4096.0),
    _tensor_json(digest=None), _tensor_json(digest="D" * 64), _tensor_json(key=0),
    _tensor_json(path=_DROP), _tensor_json(device=_DROP), _tensor_json(device=None),
    [], "w", None,
], ids=repr)
def test_a_malformed_tensor_record_is_refused(data: Any) -> None:
    with pytest.raises(FormatError, match="test: a tensor record is malformed"):
        TensorRecord.from_json(data, BLOBS, at="test")


@pytest.mark.parametrize("data", [
    {"path": "p", "blob": C, "size": 78}, {"path": 1, "blob": C, "size": 77},
    {"blob": C, "size": 77}, {"path": "p", "blob": "x", "size": 77}, ["p", C, 77],
])
def test_a_malformed_pickle_record_is_refused(data: Any) -> None:
    with pytest.raises(FormatError, match="test: a pickle record is malformed"):
        PickleRecord.from_json(data, BLOBS, at="test")


@pytest.mark.parametrize("data", [
    {"blob": C, "size": 76}, {"blob": C, "size": 77, "executable": "yes"}, {"size": 77}, 77,
])
def test_a_malformed_file_record_is_refused(data: Any) -> None:
    with pytest.raises(FormatError, match="test: file 'f' has a malformed record"):
        FileRecord.from_json("f", data, BLOBS, where="test")


@pytest.mark.parametrize("rel", ["../f", "/etc/passwd", "a//b", "a\\b", "C:x"])
def test_a_file_path_leading_outside_is_refused(rel: str) -> None:
    with pytest.raises(UnsafePathError, match="could lead outside"):
        FileRecord.from_json(rel, {"blob": C, "size": 77}, BLOBS, where="test")


@pytest.mark.parametrize(("data", "message"), [
    ([], "is not a saved object \\(no kind\\)"),
    ({"type": "t", "state": {}}, "is not a saved object \\(no kind\\)"),
    ({"kind": "tensorflow", "type": "t", "state": {}}, "has an unknown kind 'tensorflow'"),
    ({"kind": "module", "state": {}}, "is not a saved object \\(no type or state\\)"),
    ({"kind": "module", "type": "t"}, "is not a saved object \\(no type or state\\)"),
    ({"kind": "module", "type": "t", "state": {}, "tensors": {}}, "must be lists"),
    ({"kind": "value", "type": "t", "state": {}, "pickles": None}, "must be lists"),
    ({"kind": "module", "type": "t", "state": {}, "tensors": [{}]}, "tensor record"),
])
def test_a_malformed_object_is_refused(data: Any, message: str) -> None:
    with pytest.raises(FormatError, match=f"test: object 'obj'.*{message}"):
        SavedObject.from_json("obj", data, BLOBS, where="test")


def _manifest_json(**change: Any) -> dict[str, Any]:
    data = state_manifest().to_json()
    data.update(change)
    return data


@pytest.mark.parametrize(("data", "message"), [
    ([], "not a ckpt_notebook manifest"),
    (_manifest_json(format="other"), "not a ckpt_notebook manifest"),
    (_manifest_json(version=2), "manifest version 2 is newer"),
    (_manifest_json(version="1"), "manifest version 1 is newer"),
    (_manifest_json(objects=[]), "manifest has no 'objects' section"),
    (_manifest_json(checkpoint={"id": "../x"}), "is not a checkpoint id"),
    (_manifest_json(checkpoint={"id": "x", "step": "3"}), "checkpoint field 'step'"),
    (_manifest_json(blobs={A: -1}), "has size -1"),
    (_manifest_json(blobs={"A" * 64: 1}), "is not a blob digest"),
    (_manifest_json(files=[]), "'files' is not a JSON object"),
    (_manifest_json(library_versions={"torch": 2}), "'library_versions' is not"),
])
def test_a_malformed_manifest_is_refused(data: Any, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Manifest.from_json(data, where="test")


def test_a_manifest_claiming_another_id_is_refused() -> None:
    with pytest.raises(FormatError, match="says its id is '20261123-070650-20afb4'"):
        Manifest.from_json(_manifest_json(), where="test", expected_id="victim")


def test_decode_checks_the_seal() -> None:
    raw = encode(state_manifest())
    assert raw.endswith(b'"}') and DIGEST_KEY.encode() in raw
    flipped = raw.replace(b'"lr":0.01', b'"lr":0.02', 1)
    with pytest.raises(Exception, match="is corrupt"):
        decode(flipped, where="test")
