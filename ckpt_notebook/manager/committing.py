"""What a save does when its commit meets trouble: a full disk, or its name taken meanwhile.

A full disk must not stop every later save. Retention prunes after a commit, so a save that
cannot commit for lack of space would never free the space it needs, and neither would the
next. A save that meets ``ENOSPC`` (or ``EDQUOT``) therefore makes room first: it applies
the retention policy as it will stand once this save lands (the save counts as the newest,
so the oldest checkpoint the policy would drop after it goes now; never a named or pinned one,
nor the newest committed one), runs gc, and tries once more. If that frees nothing, or the
second try fails too, the error says the store is full, how much is free and what to do.
Nothing is left half-written: blobs are written to temp files that are removed on failure,
and the manifest, the commit, is written last.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import TypeVar

from ..errors import CheckpointExistsError, StoreBusyError, StoreError
from ..storage import Store
from ..types import CheckpointInfo, format_bytes
from .maintenance import PruneReport, load_policy, prune

__all__ = ["commit_making_room", "is_full", "name_taken"]

T = TypeVar("T")
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_GC_TIMEOUT_S = 10.0  # gc to make room waits this long for other holders of the store
_MiB = 1 << 20

log = logging.getLogger(__name__)


def name_taken(name: str, store: Store) -> CheckpointExistsError:
    """The error for a write-once name that is taken, found up front or by losing a race."""
    return CheckpointExistsError(f"a checkpoint named {name!r} already exists in {store.url}",
                                 ref=name, url=store.url,
                                 hint="names are write-once: pick another (e.g. add -v2)")


def is_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) says the disk or quota is full."""
    return _full_cause(err) is not None


def _full_cause(err: BaseException) -> OSError | None:
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno in FULL_ERRNOS:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def commit_making_room(store: Store, pending: CheckpointInfo,
                       attempt: Callable[[bool], T]) -> tuple[T, PruneReport | None]:
    """``attempt(False)``; if the disk is full, make room and ``attempt(True)`` once.

    Returns what the attempt returned and, when room was made, the prune that made it.
    ``attempt`` must hold no lock of the store between calls: gc takes it exclusively.
    """
    try:
        return attempt(False), None
    except OSError as err:
        if not is_full(err):
            raise
        log.warning("store %s is full (saving %s): pruning by the retention policy and gc to "
                    "make room, then trying once more", store.url, _what(pending))
        room = _make_room(store, pending)
        if room is None:
            raise _full(store, pending, err, None) from err
    try:
        return attempt(True), room
    except OSError as err:
        if not is_full(err):
            raise
        raise _full(store, pending, err, room) from err


def _make_room(store: Store, pending: CheckpointInfo) -> PruneReport | None:
    """Prune (counting ``pending`` as committed) and gc; None if that freed nothing."""
    policy = load_policy(store)
    report = PruneReport() if policy.is_empty else prune(store, policy=policy, pending=pending)
    try:
        if report.gc is None:
            report.gc = store.gc(timeout=_GC_TIMEOUT_S)
    except StoreBusyError:
        pass  # another process holds the store: the pruned blobs are freed by a later gc
    freed = report.gc.bytes_freed + report.gc.temp_removed if report.gc else 0
    return report if report.removed or freed else None


def _full(store: Store, pending: CheckpointInfo, err: BaseException,
          room: PruneReport | None) -> StoreError:
    what = _what(pending)
    policy = load_policy(store)
    why = ("there is no retention policy to prune with" if policy.is_empty
           else f"the retention policy ({policy.describe()}) keeps every checkpoint")
    if room is not None:
        freed = format_bytes(room.gc.bytes_freed if room.gc else 0)
        why = (f"pruning {len(room.removed)} checkpoint(s) and gc freed {freed}, not enough"
               if room.removed else f"gc freed {freed}, not enough, and {why}")
    cause = _full_cause(err)
    reason = (cause.strerror if cause is not None else None) or "no space left"
    return StoreError(f"store {store.url!r} is full ({_free_mib(store)}: {reason}): cannot "
                      f"save {what}, {why}; free space, set a retention policy (`ckpt policy "
                      "--keep-last N`) or delete checkpoints, then `ckpt prune` / `ckpt gc`")


def _what(pending: CheckpointInfo) -> str:
    return f"step {pending.step}" if pending.step is not None else pending.id


def _free_mib(store: Store) -> str:
    free = store.backend.free_space()
    return "free space unknown" if free is None else f"{free / _MiB:.1f} MiB free"
