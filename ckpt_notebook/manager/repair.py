"""Repair a store: find every bad or missing blob, and fetch it from a healthy copy.

    report = repair("checkpoints", source="s3://bucket/mirror")   # ckpt repair --from URL
    print(report); report.ok

Every blob every checkpoint names is re-hashed (a blob shared by many checkpoints once, as
``ckpt verify --all`` does); a bad one is quarantined (see ``storage/quarantine.py``), so the
store stops vouching for it. Then each bad or missing blob is looked up in ``source`` (a
mirror, the store a named copy came from), verified there, copied, and verified again here.
The report says which blobs were fixed, which stay broken and why, and which checkpoints
restore again. Without ``source`` nothing is fetched: the report is the diagnosis, and the
next save holding the same bytes heals the blobs it writes.

Repair holds the store as a saver does (gc waits for it). A dry run changes nothing: bad
blobs stay where they are and nothing is copied; the report says what a repair would fix.
Quarantined files older than a week are removed (they were kept for inspection).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CkptError
from ..storage import Store, quarantine
from ..storage.hashing import MISLISTED
from ..types import format_bytes
from .transfers import open_store

__all__ = ["BlobRepair", "RepairReport", "repair"]


@dataclass(frozen=True)
class BlobRepair:
    """One blob that did not verify, and what repair made of it."""

    digest: str
    size: int
    problem: str  # what verification found
    where: str  # the first checkpoint, object and tensor (or file) that holds it
    fixed: bool
    outcome: str  # "fixed from URL", "would be fixed from URL", or why it stays broken

    def to_json(self) -> dict[str, Any]:
        return {"blob": self.digest, "size": self.size, "problem": self.problem,
                "where": self.where, "fixed": self.fixed, "outcome": self.outcome}


@dataclass
class RepairReport:
    """What :func:`repair` found and did (with ``dry_run``: would do)."""

    store: str
    source: str | None = None
    dry_run: bool = False
    checkpoints: int = 0
    blobs_checked: int = 0
    blobs: list[BlobRepair] = field(default_factory=list)
    restorable: list[str] = field(default_factory=list)  # broken before, whole again now
    still_broken: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # id -> why it cannot be read
    quarantine_removed: int = 0

    @property
    def fixed(self) -> list[BlobRepair]:
        return [b for b in self.blobs if b.fixed]

    @property
    def broken(self) -> list[BlobRepair]:
        return [b for b in self.blobs if not b.fixed]

    @property
    def ok(self) -> bool:
        """Whether every checkpoint is (with ``dry_run``: would be) whole."""
        return not self.still_broken and not self.unreadable

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "source": self.source, "dry_run": self.dry_run,
                "ok": self.ok, "checkpoints": self.checkpoints,
                "blobs_checked": self.blobs_checked,
                "fixed": [b.to_json() for b in self.fixed],
                "broken": [b.to_json() for b in self.broken],
                "restorable": self.restorable, "still_broken": self.still_broken,
                "unreadable": self.unreadable, "quarantine_removed": self.quarantine_removed}

    def __str__(self) -> str:
        lines = []
        if self.blobs:
            rows = [(b.digest[:16], format_bytes(b.size), b.problem, b.outcome)
                    for b in self.blobs]
            lines += [_table(("BLOB", "SIZE", "PROBLEM", "OUTCOME"), rows), ""]
        lines += [f"{id_}: manifest unreadable: {why}" for id_, why in self.unreadable.items()]
        would = "would fix" if self.dry_run else "fixed"
        lines.append(f"checked {self.blobs_checked} blob(s) of {self.checkpoints} "
                     f"checkpoint(s) in {self.store}: {len(self.fixed)} {would}, "
                     f"{len(self.broken)} still broken")
        again = "would restore again" if self.dry_run else "restorable again"
        if self.restorable:
            lines.append(f"{again}: {_ids(self.restorable)}")
        if self.still_broken:
            lines.append(f"still broken: {_ids(self.still_broken)}")
        if self.broken and self.source is None:
            lines.append("fetch the broken blobs from a healthy copy with `ckpt repair --from "
                         "OTHER_STORE`, or save again from the same state")
        return "\n".join(lines)


def repair(store: str | os.PathLike[str] | Store | None = None, *,
           source: str | os.PathLike[str] | Store | None = None,
           dry_run: bool = False) -> RepairReport:
    """Verify every blob of every checkpoint in ``store``; quarantine bad ones; fetch bad and
    missing ones from ``source`` (verified there, then here). See the module docstring."""
    target = open_store(store)
    src = None if source is None else open_store(source)
    if src is not None and src.url == target.url:
        raise CkptError(f"cannot repair {target.url} from itself; give another store "
                        "(--from), a mirror or the store a copy came from")
    report = RepairReport(target.url, None if src is None else src.url, dry_run)
    ids = sorted(target.index.ids_on_disk())
    if not ids:
        return report
    with _changing(target, dry_run):
        needs = _survey(target, src, ids, report)
        fixed = {b.digest for b in report.blobs if b.fixed}
        for ckpt_id, digests in needs.items():
            whole = digests <= fixed
            (report.restorable if whole else report.still_broken).append(ckpt_id)
        report.still_broken += [i for i in report.unreadable if i not in report.still_broken]
        report.quarantine_removed = quarantine.clean(target.backend, dry_run=dry_run)
    return report


@contextlib.contextmanager
def _changing(store: Store, dry_run: bool) -> Iterator[None]:
    """A repair holds the store as a saver does; a dry run quarantines nothing."""
    if dry_run:
        with quarantine.no_quarantine():
            yield
        return
    with store.lock():
        yield


def _survey(store: Store, src: Store | None, ids: list[str],
            report: RepairReport) -> dict[str, set[str]]:
    """Verify every checkpoint (shared blobs once); record each bad blob in ``report`` with
    what became of it. Returns checkpoint -> the bad blobs it needs."""
    seen: dict[str, str | None] = {}
    needs: dict[str, set[str]] = {}
    first: dict[str, tuple[int, str, str]] = {}  # digest -> (size, problem, where)
    for ckpt_id in ids:
        try:
            problems = store.verify(ckpt_id, seen=seen)
            sizes = store.manifest(ckpt_id).blobs if problems else {}
        except (CkptError, OSError) as err:
            report.unreadable[ckpt_id] = str(err)
            continue
        report.checkpoints += 1
        for p in problems:
            needs.setdefault(ckpt_id, set()).add(p.blob)
            first.setdefault(p.blob, (sizes[p.blob], p.problem,
                                      f"checkpoint {ckpt_id}: {p.where}"))
    report.blobs_checked = len(seen)
    for digest, (size, problem, where) in first.items():
        report.blobs.append(_mend(store, src, digest, size, problem, where, report.dry_run))
    return needs


def _mend(store: Store, src: Store | None, digest: str, size: int, problem: str,
          where: str, dry_run: bool) -> BlobRepair:
    """Fetch one bad blob from ``src``: verified there first, checked here after."""
    def outcome(fixed: bool, text: str) -> BlobRepair:
        return BlobRepair(digest, size, problem, where, fixed, text)

    if problem.startswith(MISLISTED) or not quarantine.valid_digest(digest):
        return outcome(False, "the manifest is damaged (the blob is not at fault); "
                              "delete the checkpoint or restore its manifest")
    if src is None:
        return outcome(False, "no healthy copy given (--from)")
    try:
        there = src.blobs.check(digest, size)
        if there is not None:
            return outcome(False, f"{there} in {src.url} too")
        if dry_run:
            return outcome(True, f"would be fixed from {src.url}")
        store.blobs.copy_from(src.blobs, digest, size, where=where)
        here = store.blobs.check(digest, size)
    except (CkptError, OSError) as err:
        return outcome(False, f"fetching it failed: {err}")
    if here is not None:
        return outcome(False, f"copied from {src.url}, but here it is {here}")
    return outcome(True, f"fixed from {src.url}")


def _ids(ids: list[str], limit: int = 8) -> str:
    more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                     for r in (header, *rows))
