"""The manifest: the small JSON document that *is* a checkpoint (see docs/format.md).

A manifest names every blob it needs (``blobs``: hash -> size), carries the checkpoint's
metadata (``checkpoint``) and describes each saved object (``objects``) or, for a copied
folder, each file (``files``). Its schema is versioned; readers refuse versions newer than
they know, with an upgrade hint. A manifest is sealed with its content digest.

In memory a manifest is a :class:`Manifest` of frozen records (:class:`SavedObject`,
:class:`TensorRecord`, :class:`PickleRecord`, :class:`FileRecord`). Each record's
``from_json`` is where everything a reader relies on (ids, digests, sizes, file paths,
tensor records) is validated: a store may be hostile or rotten. ``to_json`` gives back the
JSON exactly as it is written (same keys, same order), so :func:`encode` writes the bytes
that earlier versions wrote for the same checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args, overload

from ..errors import FormatError
from ..types import ArrayKind, CheckpointInfo, ObjectKind
from .tensorfile import ITEMSIZE
from .trust import check_digest, check_id, check_relpath, is_digest, seal, show_value, unseal

__all__ = [
    "FORMAT",
    "OBJECT_KINDS",
    "VERSION",
    "FileRecord",
    "Manifest",
    "PickleRecord",
    "SavedObject",
    "TensorRecord",
    "TensorRecords",
    "decode",
    "encode",
    "info_from_json",
    "info_to_json",
]

FORMAT = "ckpt_notebook.manifest"
VERSION = 1

OBJECT_KINDS: tuple[ObjectKind, ...] = get_args(ObjectKind)
_ARRAYS: tuple[ArrayKind, ...] = get_args(ArrayKind)


@dataclass(frozen=True, slots=True)
class TensorRecord:
    """One saved array: which blob holds it (``blob``, under ``key``), and what it is.

    ``digest`` identifies its bytes (manifests before per-tensor digests have none);
    ``array`` says whether it restores as a torch tensor or a numpy array; ``device`` is
    where it lived when saved."""

    path: str
    dtype: str
    shape: tuple[int, ...]
    array: ArrayKind
    device: str
    blob: str
    key: str
    blob_size: int
    nbytes: int
    digest: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"path": self.path, "dtype": self.dtype, "shape": list(self.shape),
               "array": self.array, "device": self.device, "blob": self.blob, "key": self.key,
               "blob_size": self.blob_size, "nbytes": self.nbytes}
        if self.digest is not None:
            out["digest"] = self.digest
        return out

    @classmethod
    def from_json(cls, data: Any, blobs: Mapping[str, int], *, at: str) -> TensorRecord:
        """A tensor record, checked (see :meth:`check_json`)."""
        cls.check_json(data, blobs, at=at)
        return cls._of(data)

    @staticmethod
    def check_json(data: Any, blobs: Mapping[str, int], *, at: str) -> None:
        """Refuse a malformed record: its blob must be one of ``blobs``, with that size,
        and its ``nbytes`` what its dtype and shape take."""
        try:
            path, dtype, shape, array = data["path"], data["dtype"], data["shape"], data["array"]
            device, blob, key = data["device"], data["blob"], data["key"]
            blob_size, nbytes = data["blob_size"], data["nbytes"]
        except (KeyError, TypeError):
            raise FormatError(f"{at}: a tensor record is malformed ({show_value(data)})"
                              ) from None
        if not (isinstance(path, str) and isinstance(key, str) and isinstance(device, str)
                and isinstance(dtype, str) and dtype in ITEMSIZE and array in _ARRAYS
                and isinstance(blob, str) and type(blob_size) is int
                and blob_size == blobs.get(blob) and type(nbytes) is int
                and isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
                and nbytes == math.prod(shape) * ITEMSIZE[dtype]
                and ("digest" not in data or is_digest(data["digest"]))):
            raise FormatError(f"{at}: a tensor record is malformed ({show_value(data)})")

    @classmethod
    def _of(cls, data: dict[str, Any]) -> TensorRecord:
        """The record of JSON that :meth:`check_json` accepted."""
        return cls(data["path"], data["dtype"], tuple(data["shape"]), data["array"],
                   data["device"], data["blob"], data["key"], data["blob_size"], data["nbytes"],
                   data.get("digest"))


class TensorRecords(Sequence[TensorRecord]):
    """A decoded object's tensor records, checked when the manifest is read but built on
    first use: gc and listings read manifests of 10,000 tensors without building 10,000
    records they never look at. Equal to any sequence of the same records."""

    __slots__ = ("_checked", "_records")

    def __init__(self, checked: list[dict[str, Any]]) -> None:
        self._checked = checked
        self._records: tuple[TensorRecord, ...] | None = None

    def _all(self) -> tuple[TensorRecord, ...]:
        if self._records is None:
            of = TensorRecord._of
            self._records = tuple([of(t) for t in self._checked])
        return self._records

    def __len__(self) -> int:
        return len(self._checked)

    @overload
    def __getitem__(self, index: int) -> TensorRecord: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[TensorRecord, ...]: ...

    def __getitem__(self, index: int | slice) -> TensorRecord | tuple[TensorRecord, ...]:
        return self._all()[index]

    def __iter__(self) -> Iterator[TensorRecord]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and self._all() == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._all())


@dataclass(frozen=True, slots=True)
class PickleRecord:
    """One pickled value of an object (saved only with ``allow_pickle=True``): the blob
    holding its bytes, and its path in the object's state (``""``: the whole value)."""

    path: str
    blob: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "blob": self.blob, "size": self.size}

    @classmethod
    def from_json(cls, data: Any, blobs: Mapping[str, int], *, at: str) -> PickleRecord:
        if not (isinstance(data, dict) and isinstance(data.get("path"), str)
                and _blob_of(data, "size", blobs)):
            raise FormatError(f"{at}: a pickle record is malformed ({show_value(data)})")
        return cls(data["path"], data["blob"], blobs[data["blob"]])


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One file of a files checkpoint (a copied folder): its blob, size and mode."""

    blob: str
    size: int
    executable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"blob": self.blob, "size": self.size, "executable": self.executable}

    @classmethod
    def from_json(cls, rel: str, data: Any, blobs: Mapping[str, int], *,
                  where: str) -> FileRecord:
        """The record of the file at ``rel`` (a path that must stay inside the folder)."""
        check_relpath(rel, where=where)
        if not (isinstance(data, dict) and _blob_of(data, "size", blobs)
                and isinstance(data.get("executable", False), bool)):
            raise FormatError(f"{where}: file {rel!r} has a malformed record ({show_value(data)})")
        return cls(data["blob"], blobs[data["blob"]], data.get("executable", False))


@dataclass(frozen=True, slots=True)
class SavedObject:
    """One saved object: its kind and type, its state as a JSON tree (see docs/format.md,
    "Tags in state trees"), and the arrays and pickled values that tree refers to."""

    kind: ObjectKind
    type: str
    state: Any
    tensors: Sequence[TensorRecord] = ()
    pickles: Sequence[PickleRecord] = ()

    @property
    def nbytes(self) -> int:
        """Its arrays' and pickled values' bytes."""
        return sum(t.nbytes for t in self.tensors) + sum(p.size for p in self.pickles)

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, "type": self.type, "state": self.state,
               "tensors": [t.to_json() for t in self.tensors]}
        if self.pickles:
            out["pickles"] = [p.to_json() for p in self.pickles]
        return out

    @classmethod
    def from_json(cls, name: str, data: Any, blobs: Mapping[str, int], *,
                  where: str) -> SavedObject:
        at = f"{where}: object {name!r}"
        kind = data.get("kind") if isinstance(data, dict) else None
        if not isinstance(kind, str):
            raise FormatError(f"{at} is not a saved object (no kind)")
        if kind not in OBJECT_KINDS:
            raise FormatError(f"{at} has an unknown kind {show_value(kind)}; the manifest is "
                              "damaged, or newer than this ckpt_notebook reads (upgrade with "
                              "`pip install -U ckpt_notebook`)")
        if not isinstance(data.get("type"), str) or "state" not in data:
            raise FormatError(f"{at} is not a saved object (no type or state)")
        tensors = data.get("tensors", [])
        pickles = data.get("pickles", [])
        if not isinstance(tensors, list) or not isinstance(pickles, list):
            raise FormatError(f"{at}: 'tensors' and 'pickles' must be lists")
        check = TensorRecord.check_json
        for t in tensors:
            check(t, blobs, at=at)
        return cls(kind, data["type"], data["state"], TensorRecords(tensors),
                   tuple([PickleRecord.from_json(p, blobs, at=at) for p in pickles]))


@dataclass(frozen=True)
class Manifest:
    """A checkpoint as its manifest describes it: its metadata, every blob it needs, its
    saved objects, and (files checkpoints) its files by relative path."""

    checkpoint: CheckpointInfo
    blobs: Mapping[str, int]
    objects: Mapping[str, SavedObject]
    files: Mapping[str, FileRecord] | None = None
    library_versions: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON document (without its seal)."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "checkpoint": info_to_json(self.checkpoint),
            "library_versions": dict(self.library_versions),
            "blobs": dict(self.blobs),
            "objects": {name: obj.to_json() for name, obj in self.objects.items()},
        }
        if self.files is not None:
            doc["files"] = {rel: f.to_json() for rel, f in self.files.items()}
        return doc

    @classmethod
    def from_json(cls, doc: Any, *, where: str, expected_id: str | None = None) -> Manifest:
        """A manifest document, validated record by record. ``expected_id`` is the id its
        file name gives: a manifest claiming another id is refused (it could name paths
        outside the store)."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise FormatError(f"{where}: not a ckpt_notebook manifest")
        version = doc.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise FormatError(
                f"{where}: manifest version {version} is newer than this ckpt_notebook reads "
                f"(up to {VERSION}); upgrade with `pip install -U ckpt_notebook`"
            )
        for key in ("checkpoint", "blobs", "objects"):
            if not isinstance(doc.get(key), dict):
                raise FormatError(f"{where}: manifest has no {key!r} section")
        info = info_from_json(doc["checkpoint"], where=where)
        if expected_id is not None and info.id != expected_id:
            raise FormatError(f"{where}: the manifest says its id is {info.id!r}, but its file "
                              f"is {expected_id}.json; the store is damaged or was crafted")
        blobs = _blobs_from_json(doc["blobs"], where)
        objects = {name: SavedObject.from_json(name, obj, blobs, where=where)
                   for name, obj in doc["objects"].items()}
        files = None
        if doc.get("files") is not None:
            if not isinstance(doc["files"], dict):
                raise FormatError(f"{where}: 'files' is not a JSON object")
            files = {rel: FileRecord.from_json(rel, entry, blobs, where=where)
                     for rel, entry in doc["files"].items()}
        versions = doc.get("library_versions", {})
        if not (isinstance(versions, dict)
                and all(isinstance(v, str) for v in versions.values())):
            raise FormatError(f"{where}: 'library_versions' is not a JSON object of texts "
                              f"({show_value(versions)})")
        return cls(info, blobs, objects, files, versions)


def encode(manifest: Manifest) -> bytes:
    """The manifest's bytes, sealed with their content digest (see :mod:`.trust`)."""
    return seal(manifest.to_json())


def decode(raw: bytes, *, where: str, expected_id: str | None = None) -> Manifest:
    """Parse, unseal and validate a manifest (see :meth:`Manifest.from_json`)."""
    return Manifest.from_json(unseal(raw, where=where), where=where, expected_id=expected_id)


# -- validation: every value a reader relies on, checked once where it is read -------------
_OPTIONAL_TEXT = ("run", "notebook", "source", "created")
_KINDS = ("state", "files")


def info_from_json(meta: Any, *, where: str) -> CheckpointInfo:
    """A checkpoint's metadata (manifest ``checkpoint`` section or index entry), checked."""
    if not isinstance(meta, dict):
        raise FormatError(f"{where}: checkpoint metadata is not a JSON object")
    ckpt_id = check_id(meta.get("id"), where=f"{where}: id")
    name = meta.get("name")
    if name is not None and name != ckpt_id:
        raise FormatError(f"{where}: a named checkpoint's id is its name, but the name is "
                          f"{name!r} and the id {ckpt_id!r}")
    if meta.get("parent") is not None:
        check_id(meta["parent"], where=f"{where}: parent")
    bad = next((k for k in _OPTIONAL_TEXT if not _opt(meta.get(k), str)), None)
    bad = bad or next((k for k in ("step", "epoch", "new_bytes")
                       if not _opt(meta.get(k), int) or isinstance(meta.get(k), bool)), None)
    if bad is None and meta.get("kind", "state") not in _KINDS:
        bad = "kind"
    if bad is None and not _natural(meta.get("logical_bytes", 0)):
        bad = "logical_bytes"
    if bad is None and not _texts(meta.get("tags", [])):
        bad = "tags"
    if bad is None and not _texts(meta.get("objects", [])):
        bad = "objects"
    metrics = meta.get("metrics", {})
    if bad is None and not (isinstance(metrics, dict) and all(
            isinstance(k, str) and (v is None or _number(v)) for k, v in metrics.items())):
        bad = "metrics"
    if bad is not None:
        raise FormatError(f"{where}: checkpoint field {bad!r} has a value of the wrong type "
                          f"({show_value(meta.get(bad))}); the manifest is damaged")
    return CheckpointInfo.from_json(meta)


def info_to_json(info: CheckpointInfo) -> dict[str, Any]:
    """A checkpoint's metadata as a manifest's ``checkpoint`` section holds it."""
    meta = info.to_json()
    del meta["committed"]  # a manifest is committed by being there
    return meta


def _blobs_from_json(blobs: dict[str, Any], where: str) -> dict[str, int]:
    for digest, size in blobs.items():
        check_digest(digest, where=f"{where}: blobs")
        if not _natural(size):
            raise FormatError(f"{where}: blob {digest[:16]} has size {show_value(size)}")
    return blobs


def _blob_of(record: dict[str, Any], size_key: str, blobs: Mapping[str, int]) -> bool:
    """The record names a blob of the manifest, with that blob's size."""
    digest = record.get("blob")
    return isinstance(digest, str) and digest in blobs and record.get(size_key) == blobs[digest]


def _opt(value: Any, kind: type) -> bool:
    return value is None or isinstance(value, kind)


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
