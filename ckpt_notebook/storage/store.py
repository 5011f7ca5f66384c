"""The store: blobs, manifests, the listing index, commit, delete and garbage collection.

Layout under the root URL (see docs/format.md)::

    ckpt-store.json          marks the folder as a store (format version)
    blobs/ab/ab12...         content-addressed blobs (BLAKE3)
    manifests/<id>.json      one per checkpoint; writing it is the commit
    manifests/<id>.commit    commit records: the manifest's digest and time (see below)
    index.json               listing cache, rebuilt from manifests when stale
    tmp/                     in-flight temp files (local stores); gc removes leftovers

A checkpoint is visible exactly when its manifest exists, and its manifest is written only
after every blob it names is durable, so a crash at any moment leaves a readable store.
After the manifest, a commit record ``manifests/<id>.commit`` is written (and removed first
on delete; beside the manifest, so one listing finds both): a record whose manifest is
missing or unreadable is a checkpoint that was lost, so ``latest`` never silently falls
back to an older one. Everything read here is checked
(:mod:`.trust`): a store may be hostile or rotten.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    CheckpointNotFoundError,
    CkptError,
    FormatError,
    IntegrityError,
    StoreError,
    StorePermissionError,
)
from ..types import CheckpointInfo, format_bytes, utc_now
from . import locks, quarantine
from . import manifest as manifest_format
from .backend import Backend, open_backend
from .blobs import BlobStore, blob_path
from .control import MetricHistory, PinSet, PolicyFile, RequestQueue
from .hashing import hash_chunks
from .index import MANIFEST_DIR, RECORD_SUFFIX, Index
from .manifest import Manifest
from .trust import check_id, seal, unseal

__all__ = ["GcReport", "Store", "StoreProblem", "Unreadable", "VerifyProblem"]

STORE_FILE = "ckpt-store.json"
STORE_FORMAT = "ckpt_notebook.store"
_STORE_ENTRIES = {"blobs", "manifests", "tmp", "index.json", "pins", "policy.json", "requests",
                  "runs", locks.LOCK_DIR, STORE_FILE, "quarantine", "uses"}
_DIGEST_IN_TEXT = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
_TMP_MAX_AGE_S = 24 * 3600  # a temp file of another host's writer this old is a leftover


@dataclass(frozen=True)
class VerifyProblem:
    """One blob of one checkpoint that does not verify."""

    checkpoint: str
    blob: str
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.checkpoint}: {self.where}: blob {self.blob[:16]} is {self.problem}"


@dataclass(frozen=True)
class Unreadable:
    """A checkpoint whose manifest is missing (its commit record remains) or cannot be read.
    ``created`` comes from its commit record, or its id, when either tells."""

    id: str
    created: str | None
    problem: str

    def __str__(self) -> str:
        return f"{self.id}: {self.problem}"


@dataclass(frozen=True)
class StoreProblem:
    """Something wrong with the store itself rather than with one blob (see :meth:`Store.audit`)."""

    what: str
    problem: str

    def __str__(self) -> str:
        return f"{self.what}: {self.problem}"


@dataclass
class GcReport:
    blobs_removed: int = 0
    bytes_freed: int = 0
    temp_removed: int = 0
    locks_removed: int = 0  # lock objects of holders that died (object stores)
    uploads_aborted: int = 0  # incomplete multipart uploads dead writers left (S3)
    quarantine_removed: int = 0  # bad blobs quarantined over a week ago
    blobs_kept: int = 0
    removed: list[str] = field(default_factory=list)
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        locks = (f", {_count(self.locks_removed, 'stale lock')}" if self.locks_removed else "")
        aborted = "would be aborted" if self.dry_run else "aborted"
        uploads = (f", {_count(self.uploads_aborted, 'incomplete upload')} {aborted}"
                   if self.uploads_aborted else "")
        bad = (f", {_count(self.quarantine_removed, 'old quarantined blob')}"
               if self.quarantine_removed else "")
        return (f"{verb} {_count(self.blobs_removed, 'unreferenced blob')} "
                f"({format_bytes(self.bytes_freed)}) and {_count(self.temp_removed, 'temp file')}"
                f"{locks}{uploads}{bad}; {_count(self.blobs_kept, 'blob')} in use")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class Store:
    """A checkpoint store rooted at any fsspec URL (default ``./checkpoints``)."""

    def __init__(self, url: str | os.PathLike[str] | None = None,
                 **storage_options: Any) -> None:
        self.backend: Backend = open_backend(url, **storage_options)
        self.url = self.backend.url
        self.blobs = BlobStore(self.backend)
        self.index = Index(self.backend, self.info)
        self.pins = PinSet(self.backend)
        self.policy = PolicyFile(self.backend)
        self.requests = RequestQueue(self.backend)
        self.history = MetricHistory(self.backend)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- opening -------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create the store on first write; refuse a non-empty folder that is not a store."""
        b = self.backend
        if b.exists(STORE_FILE):
            return
        existing = [n for n in b.listdir("") if not n.startswith(".")]
        if existing and not set(existing) <= _STORE_ENTRIES:
            raise StoreError(
                f"{self.url!r} is not a ckpt_notebook store (it holds {existing[0]!r} but no "
                f"{STORE_FILE})", url=self.url, hint="choose an empty or new folder"
            )
        doc = {"format": STORE_FORMAT, "version": manifest_format.VERSION, "created": utc_now()}
        try:
            b.write_atomic(STORE_FILE, [json.dumps(doc).encode()])
        except PermissionError as err:
            raise StorePermissionError(f"cannot write to store {self.url!r}: permission denied",
                                       url=self.url) from err

    @contextlib.contextmanager
    def lock(self, *, exclusive: bool = False, timeout: float = 30.0) -> Iterator[None]:
        """Savers hold the store shared, gc holds it exclusively: so gc never removes a blob
        that a save found in the store and is about to reference. Local stores lock with
        ``flock``, object stores with lock objects (:mod:`.locks`)."""
        busy = (f"store {self.url!r} is busy ({'a save' if exclusive else 'gc'} is running in "
                "another process); try again when it finishes")
        with self.backend.lock(exclusive=exclusive, timeout=timeout, busy=busy):
            yield

    # -- manifests -----------------------------------------------------------------------
    @staticmethod
    def manifest_path(ckpt_id: str) -> str:
        return f"{MANIFEST_DIR}/{check_id(ckpt_id, where='checkpoint')}.json"

    @staticmethod
    def record_path(ckpt_id: str) -> str:
        return f"{MANIFEST_DIR}/{check_id(ckpt_id, where='checkpoint')}{RECORD_SUFFIX}"

    def commit(self, manifest: Manifest) -> None:
        """Write the manifest (the commit), then its commit record. Never replaces an
        existing checkpoint."""
        info = manifest.checkpoint
        raw = manifest_format.encode(manifest)
        self.backend.write_atomic(self.manifest_path(info.id), [raw], exclusive=True)
        record = {"id": info.id, "created": info.created, "manifest": hash_chunks([raw])}
        # Committed already: a record that cannot be written only weakens loss detection.
        with contextlib.suppress(OSError):
            self.backend.write_atomic(self.record_path(info.id), [seal(record)], durable=False)

    def manifest(self, ckpt_id: str) -> Manifest:
        """The checkpoint's manifest, unsealed and validated (see :mod:`.manifest`)."""
        return self._manifest(ckpt_id)[0]

    def _manifest(self, ckpt_id: str) -> tuple[Manifest, bytes]:
        rel = self.manifest_path(ckpt_id)
        try:
            raw = self.backend.read_bytes(rel)
        except FileNotFoundError as err:
            raise CheckpointNotFoundError(f"no checkpoint {ckpt_id!r} in {self.url}",
                                          ref=ckpt_id, url=self.url) from err
        return manifest_format.decode(raw, where=self.backend.where(rel),
                                      expected_id=ckpt_id), raw

    def info(self, ckpt_id: str) -> CheckpointInfo:
        return self.manifest(ckpt_id).checkpoint

    def exists(self, ckpt_id: str) -> bool:
        return self.backend.exists(self.manifest_path(ckpt_id))

    def delete(self, ckpt_id: str) -> None:
        """Remove a checkpoint's manifest; its blobs go at the next :meth:`gc`. A checkpoint
        that was lost (only its commit record remains) can be deleted too, to accept the loss."""
        recorded = self.backend.exists(self.record_path(ckpt_id))
        if not recorded and not self.exists(ckpt_id):
            raise CheckpointNotFoundError(f"no checkpoint {ckpt_id!r} in {self.url}",
                                          ref=ckpt_id, url=self.url)
        self.backend.remove(self.record_path(ckpt_id))  # first: never a record without intent
        self.backend.remove(self.manifest_path(ckpt_id))
        self.pins.remove(ckpt_id)

    def unreadable(self) -> list[Unreadable]:
        """Checkpoints that the last :meth:`list` could not list: manifests that do not read,
        and commit records whose manifest is gone. Oldest first (unknown times last)."""
        if not self.index.listed:
            self.list()
        out = {ckpt_id: Unreadable(ckpt_id, self._recorded_time(ckpt_id), problem)
               for ckpt_id, problem in self.index.unreadable.items()}
        for ckpt_id in self.index.recorded - set(out) - self.index.listed_ids:
            if not self.exists(ckpt_id) and self.backend.exists(self.record_path(ckpt_id)):
                # neither committed nor deleted since the listing
                out[ckpt_id] = Unreadable(ckpt_id, self._recorded_time(ckpt_id),
                                          "its manifest is missing (the commit record remains)")
        return sorted(out.values(), key=lambda u: (u.created is None, u.created or "", u.id))

    def _record(self, ckpt_id: str) -> dict[str, Any] | None:
        """The checkpoint's commit record; None if it has none (older stores)."""
        try:
            doc = unseal(self.backend.read_bytes(self.record_path(ckpt_id)),
                         where=self.backend.where(self.record_path(ckpt_id)), required=True)
        except FileNotFoundError:
            return None
        if not isinstance(doc, dict) or doc.get("id") != ckpt_id:
            raise IntegrityError(f"{self.backend.where(self.record_path(ckpt_id))} is not the "
                                 f"commit record of {ckpt_id}")
        return doc

    def _recorded_time(self, ckpt_id: str) -> str | None:
        try:
            record = self._record(ckpt_id)
        except (CkptError, OSError):
            record = None
        created = None if record is None else record.get("created")
        return created if isinstance(created, str) else id_time(ckpt_id)

    # -- verify and gc -------------------------------------------------------------------
    def verify(self, ckpt_id: str, *, seen: dict[str, str | None] | None = None,
               ) -> list[VerifyProblem]:
        """Check a checkpoint's manifest (seal, every record, its commit record) and re-hash
        every blob it names; returns what does not verify (empty: fine). A manifest that
        cannot be read at all raises.

        Pass the same ``seen`` dict when verifying many checkpoints: blobs they share are
        hashed once.
        """
        doc, raw = self._manifest(ckpt_id)
        record = self._record(ckpt_id)
        if record is not None and record.get("manifest") != hash_chunks([raw]):
            raise IntegrityError(f"{self.backend.where(self.manifest_path(ckpt_id))} is not the "
                                 "manifest that was committed (its digest differs from "
                                 f"{self.record_path(ckpt_id)}); restore it from a copy")
        where = blob_owners(doc)
        seen = {} if seen is None else seen
        problems = []
        for digest, size in doc.blobs.items():
            if digest not in seen:
                seen[digest] = self.blobs.check(digest, size)
            problem = seen[digest]
            if problem is not None:
                problems.append(VerifyProblem(ckpt_id, digest, where.get(digest, "?"), problem))
        return problems

    def referenced_blobs(self) -> set[str]:
        """Every blob some manifest names. A manifest that does not read (damaged, crafted,
        newer) keeps every blob digest that appears in its bytes: its blobs are not known
        for sure, and keeping too much only wastes space."""
        refs: set[str] = set()
        for ckpt_id in self.index.ids_on_disk():
            try:
                doc, raw = self._manifest(ckpt_id)
            except CheckpointNotFoundError:
                continue  # deleted meanwhile
            except (FormatError, IntegrityError):
                raw = self.backend.read_bytes(self.manifest_path(ckpt_id))
                refs.update(m.decode() for m in _DIGEST_IN_TEXT.findall(raw))
                continue
            refs.update(doc.blobs)
        return refs

    def unreferenced_blobs(self, stored: dict[str, str] | None = None) -> dict[str, str]:
        """The blobs no manifest names (digest -> path): what the next :meth:`gc` removes."""
        stored = self.blobs.all_digests() if stored is None else stored
        refs = self.referenced_blobs()
        return {d: rel for d, rel in stored.items() if d not in refs}

    def verify_all(self) -> list[VerifyProblem | StoreProblem]:
        """:meth:`audit` plus :meth:`verify` of every checkpoint (shared blobs hashed once)."""
        problems: list[VerifyProblem | StoreProblem] = [*self.audit()]
        seen: dict[str, str | None] = {}
        for info in self.list():
            try:
                problems += self.verify(info.id, seen=seen)
            except (CkptError, OSError) as err:
                problems.append(StoreProblem(f"checkpoint {info.id}", str(err)))
        return problems

    def audit(self) -> list[StoreProblem]:
        """What is wrong with the store beyond its blobs: unreadable or lost manifests, an
        index that disagrees with them, pins and a policy that do not read. (Blobs:
        :meth:`verify`.)"""
        self.list()
        problems = [StoreProblem(f"checkpoint {u.id}", u.problem) for u in self.unreadable()]
        if self.index.rebuilt is not None:
            problems.append(StoreProblem("index.json", f"{self.index.rebuilt} (rebuilt from "
                                                        "the manifests)"))
        problems += [StoreProblem("index.json", p) for p in self.index.disagreements()]
        for what, read in (("pins", self.pins.ids), ("policy.json", self.policy.read)):
            try:
                read()
            except (CkptError, OSError) as err:
                problems.append(StoreProblem(what, str(err)))
        return problems

    def gc(self, *, dry_run: bool = False, timeout: float = 30.0) -> GcReport:
        """Remove unreferenced blobs, leftover temp files, blobs quarantined over a week ago,
        and the lock objects and incomplete uploads of writers that died (object stores).
        Holds the store exclusively, on every backend, waiting up to ``timeout`` seconds."""
        report = GcReport(dry_run=dry_run)
        if not self.backend.exists(""):
            return report  # nothing to collect; do not create the folder
        with self.lock(exclusive=True, timeout=timeout):
            stored = self.blobs.all_digests()
            unreferenced = self.unreferenced_blobs(stored)
            report.blobs_kept = len(stored) - len(unreferenced)
            for digest, rel in unreferenced.items():
                report.bytes_freed += self.backend.size(rel)
                report.blobs_removed += 1
                report.removed.append(digest)
                if not dry_run:
                    self.backend.remove(rel)
            report.temp_removed = self._clean_tmp(dry_run=dry_run)
            report.quarantine_removed = quarantine.clean(self.backend, dry_run=dry_run)
            report.temp_removed += self.requests.forget_taken(dry_run=dry_run)
            report.locks_removed = self.backend.remove_stale_locks(dry_run=dry_run)
            report.uploads_aborted = self.backend.abort_abandoned_uploads("blobs",
                                                                          dry_run=dry_run)
        return report

    def _clean_tmp(self, *, dry_run: bool) -> int:
        """Remove temp files whose writer is gone: a dead process on this host (small files
        like pins and the policy are written without the store lock), else by age."""
        removed = 0
        now = time.time()
        for name in self.backend.listdir("tmp"):
            rel = f"tmp/{name}"
            alive = writer_alive(name)
            if alive is False or (alive is None and now - self.backend.mtime(rel)
                                  > _TMP_MAX_AGE_S):
                removed += 1
                if not dry_run:
                    self.backend.remove(rel)
        return removed

    def blob_path(self, digest: str) -> str:
        return self.backend.path(blob_path(digest))

    def list(self) -> list[CheckpointInfo]:
        """Every committed checkpoint, oldest first."""
        return sorted(self.index.entries().values(), key=lambda i: (i.created, i.id))


def id_time(ckpt_id: str) -> str | None:
    """The creation time an ordinary id (``YYYYmmdd-HHMMSS-xxxxxx``) tells, ISO-8601 UTC."""
    d, _, rest = ckpt_id.partition("-")
    t = rest[:6]
    if len(d) != 8 or not (d + t).isdigit() or rest[6:7] != "-":
        return None
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}.000000+00:00"


def writer_alive(tmp_name: str) -> bool | None:
    """Whether the process that named a temp file ``<host>-<pid>-<random>`` still runs:
    ``None`` when it cannot be told (another host's); ``False`` for names no writer uses."""
    head, _, _rand = tmp_name.rpartition("-")
    host, _, pid_text = head.rpartition("-")
    if not host or not pid_text.isdigit():
        return False
    if host != socket.gethostname():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def blob_owners(doc: Manifest) -> dict[str, str]:
    """For error messages: which object and tensors (or files) each blob of a manifest holds."""
    owners: dict[str, list[str]] = {}
    for name, obj in doc.objects.items():
        for t in obj.tensors:
            owners.setdefault(t.blob, []).append(f"{name}: tensor {t.path}")
        for p in obj.pickles:
            what = f"pickled {p.path}" if p.path else "pickled value"
            owners.setdefault(p.blob, []).append(f"{name}: {what}")
    for path, entry in (doc.files or {}).items():
        owners.setdefault(entry.blob, []).append(f"file {path}")
    out = {}
    for digest, names in owners.items():
        more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
        out[digest] = ", ".join(names[:3]) + more
    return out
