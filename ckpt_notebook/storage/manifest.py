"""The manifest: the small JSON document that *is* a checkpoint (see docs/format.md).

A manifest names every blob it needs (``blobs``: hash -> size), carries the checkpoint's
metadata (``checkpoint``) and describes each saved object (``objects``). Its schema is
versioned; readers refuse versions newer than they know, with an upgrade hint. A manifest is
sealed with its content digest, and everything in it that a reader relies on (ids, digests,
sizes, file paths, tensor records) is validated here, where it is read: a store may be
hostile or rotten.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import FormatError
from ..types import CheckpointInfo
from .tensorfile import ITEMSIZE
from .trust import check_digest, check_id, check_relpath, is_digest, seal, show_value, unseal

__all__ = ["FORMAT", "VERSION", "decode", "encode", "info_from_json", "info_of"]

FORMAT = "ckpt_notebook.manifest"
VERSION = 1


def encode(info: CheckpointInfo, *, objects: Mapping[str, Any], blobs: Mapping[str, int],
           files: Mapping[str, Any] | None = None,
           library_versions: Mapping[str, str] | None = None) -> bytes:
    """The manifest's bytes, sealed with their content digest (see :mod:`.trust`)."""
    meta = info.to_json()
    meta.pop("committed", None)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": meta,
        "library_versions": dict(library_versions or {}),
        "blobs": dict(blobs),
        "objects": dict(objects),
    }
    if files is not None:
        doc["files"] = dict(files)
    return seal(doc)


def decode(raw: bytes, *, where: str, expected_id: str | None = None) -> dict[str, Any]:
    """Parse, unseal and validate a manifest. ``expected_id`` is the id its file name gives:
    a manifest claiming another id is refused (it could name paths outside the store)."""
    doc = unseal(raw, where=where)
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
        raise FormatError(f"{where}: the manifest says its id is {info.id!r}, but its file is "
                          f"{expected_id}.json; the store is damaged or was crafted")
    _check_blobs(doc["blobs"], where)
    _check_objects(doc["objects"], doc["blobs"], where)
    if doc.get("files") is not None:
        _check_files(doc["files"], doc["blobs"], where)
    return doc


def info_of(doc: Mapping[str, Any]) -> CheckpointInfo:
    return CheckpointInfo.from_json(doc["checkpoint"])


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


def _check_blobs(blobs: dict[str, Any], where: str) -> None:
    for digest, size in blobs.items():
        check_digest(digest, where=f"{where}: blobs")
        if not _natural(size):
            raise FormatError(f"{where}: blob {digest[:16]} has size {show_value(size)}")


def _check_objects(objects: dict[str, Any], blobs: dict[str, Any], where: str) -> None:
    for name, obj in objects.items():
        at = f"{where}: object {name!r}"
        if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
            raise FormatError(f"{at} is not a saved object (no kind)")
        tensors = obj.get("tensors", [])
        pickles = obj.get("pickles", [])
        if not isinstance(tensors, list) or not isinstance(pickles, list):
            raise FormatError(f"{at}: 'tensors' and 'pickles' must be lists")
        for t in tensors:
            _check_tensor(t, blobs, at)
        for p in pickles:
            if not (isinstance(p, dict) and isinstance(p.get("path"), str)
                    and _blob_of(p, "size", blobs)):
                raise FormatError(f"{at}: a pickle record is malformed ({show_value(p)})")


def _check_tensor(t: Any, blobs: dict[str, Any], at: str) -> None:
    ok = (isinstance(t, dict) and isinstance(t.get("path"), str)
          and isinstance(t.get("key"), str) and str(t.get("dtype")) in ITEMSIZE
          and t.get("array") in ("torch", "numpy") and _blob_of(t, "blob_size", blobs)
          and isinstance(t.get("shape"), list) and all(_natural(n) for n in t["shape"])
          and t.get("nbytes") == math.prod(t["shape"]) * ITEMSIZE[t["dtype"]]
          and ("digest" not in t or is_digest(t["digest"])))
    if not ok:
        raise FormatError(f"{at}: a tensor record is malformed ({show_value(t)})")


def _check_files(files: Any, blobs: dict[str, Any], where: str) -> None:
    if not isinstance(files, dict):
        raise FormatError(f"{where}: 'files' is not a JSON object")
    for rel, entry in files.items():
        check_relpath(rel, where=where)
        if not (isinstance(entry, dict) and _blob_of(entry, "size", blobs)
                and isinstance(entry.get("executable", False), bool)):
            raise FormatError(f"{where}: file {rel!r} has a malformed record ({show_value(entry)})")


def _blob_of(record: dict[str, Any], size_key: str, blobs: dict[str, Any]) -> bool:
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

