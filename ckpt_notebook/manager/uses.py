"""Who uses a checkpoint's files, so that deleting it while they are in use needs ``force``.

    uses/<id>/<key>.json     {"checkpoint", "host", "pid", "path", "since"}, sealed

``materialize`` (and with it ``use``, ``ckpt get`` and ``%checkpoint use``) writes one record
per host and folder (``key`` is a digest of both, so materializing again rewrites the same
record). A record of this host whose folder no longer holds the checkpoint (removed,
re-materialized with another one) is stale: it is removed when read. Records of other hosts
cannot be checked from here and count until ``--force`` deletes the checkpoint, which removes
its records too. Recording is best effort: a store this process cannot write to (read-only
credentials) is used unrecorded rather than refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from ..errors import CkptError
from ..storage import Store
from ..storage.trust import check_id, seal, unseal
from ..types import utc_now
from .sources import MARKER

__all__ = ["USES_DIR", "Use", "forget", "record", "users"]

USES_DIR = "uses"
_KEY_RE = re.compile(r"[0-9a-f]{24}\.json")


@dataclass(frozen=True)
class Use:
    """One folder that holds a checkpoint's files."""

    host: str
    pid: int
    path: str
    since: str

    def __str__(self) -> str:
        return f"materialized at {self.path} on {self.host} (pid {self.pid}, {self.since[:19]})"


def record(store: Store, ckpt_id: str, path: Path) -> None:
    """Note that ``path`` on this host holds ``ckpt_id`` (best effort)."""
    host = socket.gethostname()
    key = hashlib.sha256(f"{host}\0{path}".encode()).hexdigest()[:24]
    doc = {"checkpoint": check_id(ckpt_id, where="use record"), "host": host,
           "pid": os.getpid(), "path": str(path), "since": utc_now()}
    with contextlib.suppress(OSError, CkptError):  # a read-only store: used unrecorded
        store.backend.write_atomic(f"{USES_DIR}/{ckpt_id}/{key}.json", [seal(doc)],
                                   durable=False)


def users(store: Store, ckpt_id: str) -> list[Use]:
    """The uses of ``ckpt_id`` that still hold (stale ones of this host are removed)."""
    folder = f"{USES_DIR}/{check_id(ckpt_id, where='use record')}"
    out = []
    for name in store.backend.listdir(folder):
        if not _KEY_RE.fullmatch(name):
            continue
        use = _read(store, f"{folder}/{name}", ckpt_id)
        if use is not None and use.host == socket.gethostname() and not _holds(use, ckpt_id):
            store.backend.remove(f"{folder}/{name}")
        elif use is not None:
            out.append(use)
    return out


def forget(store: Store, ckpt_id: str) -> None:
    """Remove every use record of ``ckpt_id`` (it was deleted)."""
    folder = f"{USES_DIR}/{check_id(ckpt_id, where='use record')}"
    for name in store.backend.listdir(folder):
        if _KEY_RE.fullmatch(name):
            store.backend.remove(f"{folder}/{name}")


def _read(store: Store, rel: str, ckpt_id: str) -> Use | None:
    """A record, or None if it went away or does not read (a damaged record is no user)."""
    try:
        doc = unseal(store.backend.read_bytes(rel), where=store.backend.where(rel),
                     required=True)
        if doc["checkpoint"] != ckpt_id:
            return None
        return Use(str(doc["host"]), int(doc["pid"]), str(doc["path"]), str(doc["since"]))
    except (FileNotFoundError, CkptError, KeyError, TypeError, ValueError):
        return None


def _holds(use: Use, ckpt_id: str) -> bool:
    try:
        marker = json.loads((Path(use.path) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("checkpoint") == ckpt_id
