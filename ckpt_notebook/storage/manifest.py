"""The manifest: the small JSON document that *is* a checkpoint (see docs/format.md).

A manifest names every blob it needs (``blobs``: hash -> size), carries the checkpoint's
metadata (``checkpoint``) and describes each saved object (``objects``). Its schema is
versioned; readers refuse versions newer than they know, with an upgrade hint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import FormatError
from ..types import CheckpointInfo

__all__ = ["FORMAT", "VERSION", "decode", "encode", "info_of"]

FORMAT = "ckpt_notebook.manifest"
VERSION = 1


def encode(info: CheckpointInfo, *, objects: Mapping[str, Any], blobs: Mapping[str, int],
           files: Mapping[str, Any] | None = None,
           library_versions: Mapping[str, str] | None = None) -> bytes:
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
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def decode(raw: bytes, *, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise FormatError(f"{where}: manifest is not valid JSON ({err})") from err
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
    return doc


def info_of(doc: Mapping[str, Any]) -> CheckpointInfo:
    return CheckpointInfo.from_json(doc["checkpoint"])
