"""The listing index: every checkpoint's metadata in one small file, rebuilt from manifests.

Manifests are the truth; the index is a cache. Listing reads ``index.json`` plus one
directory listing of ``manifests/``, opens only the manifests the index lacks, drops entries
whose manifest is gone, and rewrites the index when it changed. Concurrent writers can only
make it stale, never wrong: the next reader reconciles it. Commits do not touch the index;
a listing rewrites it once it lags by ``REWRITE_AFTER`` manifests, so neither saving nor
listing rewrites a large index every time.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from ..types import CheckpointInfo
from .backend import Backend

__all__ = ["Index"]

INDEX_FILE = "index.json"
INDEX_VERSION = 1
MANIFEST_DIR = "manifests"
SUFFIX = ".json"
REWRITE_AFTER = 32  # rewrite the index once this many manifests differ from it


class Index:
    def __init__(self, backend: Backend,
                 read_info: Callable[[str], CheckpointInfo | None]) -> None:
        self.backend = backend
        self._read_info = read_info

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.backend.read_bytes(INDEX_FILE))
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
            return {}
        entries = doc.get("entries")
        return entries if isinstance(entries, dict) else {}

    def ids_on_disk(self) -> set[str]:
        return {n[: -len(SUFFIX)] for n in self.backend.listdir(MANIFEST_DIR)
                if n.endswith(SUFFIX) and not n.startswith(".")}

    def entries(self) -> dict[str, CheckpointInfo]:
        """Every committed checkpoint, reconciled against the manifests on disk."""
        cached = self._load()
        on_disk = self.ids_on_disk()
        drift = len(set(cached) - on_disk)
        out: dict[str, CheckpointInfo] = {}
        for ckpt_id in on_disk:
            raw = cached.get(ckpt_id)
            if raw is not None:
                try:
                    out[ckpt_id] = CheckpointInfo.from_json(raw)
                    continue
                except (TypeError, ValueError, KeyError):
                    pass
            drift += 1
            info = self._read_info(ckpt_id)
            if info is not None:
                out[ckpt_id] = info
        if drift >= REWRITE_AFTER or (drift and not cached):
            self.write(out)
        return out

    def write(self, entries: dict[str, CheckpointInfo]) -> None:
        doc = {"version": INDEX_VERSION,
               "entries": {k: v.to_json() for k, v in sorted(entries.items())}}
        # A read-only store still lists; the index is only a cache.
        with contextlib.suppress(OSError):
            self.backend.write_atomic(INDEX_FILE, [json.dumps(doc).encode()], durable=False)
