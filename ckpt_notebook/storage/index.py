"""The listing index: every checkpoint's metadata in one small file, rebuilt from manifests.

Manifests are the truth; the index is a cache. Listing reads ``index.json`` plus one
directory listing of ``manifests/``, opens only the manifests the index lacks, drops entries
whose manifest is gone, and rewrites the index when it changed. Concurrent writers can only
make it stale, never wrong: the next reader reconciles it. Commits do not touch the index;
a listing rewrites it once it lags by ``REWRITE_AFTER`` manifests, so neither saving nor
listing rewrites a large index every time. The index is sealed like every control file; a
corrupt or unsealed one (written before seals) is not trusted but rebuilt from the manifests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ..errors import CkptError, FormatError, IntegrityError
from ..types import CheckpointInfo
from .backend import Backend
from .manifest import info_from_json
from .trust import is_id, seal, unseal

__all__ = ["Index"]

INDEX_FILE = "index.json"
INDEX_VERSION = 1
MANIFEST_DIR = "manifests"
SUFFIX = ".json"
RECORD_SUFFIX = ".commit"  # manifests/<id>.commit: a commit record (see store.py)
REWRITE_AFTER = 32  # rewrite the index once this many manifests differ from it


class Index:
    """The listing cache of one store. ``read_info(id)`` reads a manifest's metadata and raises
    when it cannot; after each listing, :attr:`unreadable` maps the ids whose manifest could
    not be read to why, and :attr:`rebuilt` says why the cached index was not used."""

    def __init__(self, backend: Backend, read_info: Callable[[str], CheckpointInfo]) -> None:
        self.backend = backend
        self._read_info = read_info
        self.unreadable: dict[str, str] = {}
        self.rebuilt: str | None = None
        self.recorded: set[str] = set()  # ids with a commit record, in the same listing
        self.listed_ids: set[str] = set()  # ids with a manifest file, in the same listing
        self.listed = False  # whether entries() ran: the attributes above are its findings

    def _load(self) -> dict[str, Any]:
        self.rebuilt = None
        try:
            doc = unseal(self.backend.read_bytes(INDEX_FILE), where=INDEX_FILE, required=True)
        except FileNotFoundError:
            return {}
        except (IntegrityError, FormatError) as err:
            self.rebuilt = str(err)  # a cache: rebuilt from the manifests, and said so
            return {}
        if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
            return {}
        entries = doc.get("entries")
        return entries if isinstance(entries, dict) else {}

    def ids_on_disk(self) -> set[str]:
        """The ids of every manifest file (names that are no valid id are left out)."""
        return {stem for stem in self._stems() if is_id(stem)}

    def _stems(self, names: list[str] | None = None) -> set[str]:
        names = self.backend.listdir(MANIFEST_DIR) if names is None else names
        return {n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX) and not n.startswith(".")}

    def entries(self) -> dict[str, CheckpointInfo]:
        """Every committed checkpoint whose manifest reads, reconciled against the manifests
        on disk; cached entries are checked like manifests are (see :mod:`.manifest`)."""
        cached = self._load()
        names = self.backend.listdir(MANIFEST_DIR)
        stems = self._stems(names)
        self.recorded = {stem for n in names if n.endswith(RECORD_SUFFIX)
                         and is_id(stem := n[: -len(RECORD_SUFFIX)])}
        unreadable = {stem: f"{MANIFEST_DIR}/{stem}{SUFFIX}: the file name is not a "
                            "checkpoint id" for stem in stems if not is_id(stem)}
        on_disk = stems - set(unreadable)
        drift = len(set(cached) - on_disk) + (self.rebuilt is not None)
        out: dict[str, CheckpointInfo] = {}
        for ckpt_id in on_disk:
            info = self._cached(cached.get(ckpt_id), ckpt_id)
            if info is None:
                drift += 1
                try:
                    info = self._read_info(ckpt_id)
                except (CkptError, OSError) as err:
                    unreadable[ckpt_id] = str(err)
                    continue
            out[ckpt_id] = info
        self.unreadable = unreadable
        self.listed_ids = on_disk
        self.listed = True
        if drift >= REWRITE_AFTER or (drift and not cached):
            self.write(out)
        return out

    @staticmethod
    def _cached(raw: Any, ckpt_id: str) -> CheckpointInfo | None:
        if raw is None:
            return None
        try:
            info = info_from_json(raw, where=f"{INDEX_FILE}: {ckpt_id}")
        except (FormatError, TypeError, ValueError):
            return None
        return info if info.id == ckpt_id else None

    def disagreements(self) -> list[str]:
        """Where the cached index says something its manifests do not (reads every manifest
        it lists). Entries of deleted checkpoints are mere lag, not disagreement."""
        out = []
        for ckpt_id, raw in sorted(self._load().items()):
            try:
                truth = self._read_info(ckpt_id)
            except (CkptError, OSError):
                continue  # gone, or unreadable: the listing reports those
            cached = self._cached(raw, ckpt_id)
            if cached != truth:
                what = "is malformed" if cached is None else "disagrees with its manifest"
                out.append(f"the entry of {ckpt_id} {what}; delete index.json to rebuild it")
        return out

    def write(self, entries: dict[str, CheckpointInfo]) -> None:
        doc = {"version": INDEX_VERSION,
               "entries": {k: v.to_json() for k, v in sorted(entries.items())}}
        # A read-only store still lists; the index is only a cache.
        with contextlib.suppress(OSError):
            self.backend.write_atomic(INDEX_FILE, [seal(doc)], durable=False)
