"""Store locks on object stores: one small object per holder under ``locks/``.

A local store is locked with ``flock`` on its ``.lock`` file; the kernel releases it when the
holder dies, however it dies. Object stores have no locks, so each holder writes a lock
object, then lists the others (S3, GCS and Azure list what was written before the listing
began):

- a saver (shared) backs off while another holder has the store exclusively;
- gc (exclusive) backs off while anyone else holds it at all.

Of two holders that conflict, the one that lists second always sees the first, so they
never both go on; at worst both back off and try again after a random pause. This is how
restic locks a repository in a bucket.

A holder that dies leaves its object behind. Each object names its holder: host, pid, the
process's start time and pid namespace. One whose host is this one (same pid namespace)
and whose process is gone, or whose pid now belongs to a process started at another time,
is stale at once. Holders on other hosts rewrite theirs every :data:`REFRESH_S`, so an
object older than :data:`STALE_S` belongs to nobody either. Stale objects are ignored, and
gc removes them; gc also aborts the multipart uploads a dead holder left (S3), those begun
before the oldest live lock was taken.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreBusyError
from .backend import Backend

__all__ = ["LOCK_DIR", "REFRESH_S", "STALE_S", "abort_abandoned_uploads", "held",
           "remove_stale", "this_process"]

LOCK_DIR = "locks"
REFRESH_S = 5 * 60.0  # a holder rewrites its lock object this often...
STALE_S = 30 * 60.0  # ...so one this old is a leftover (clocks may differ by minutes)
_PAUSE_S = (0.1, 0.5)  # between tries, at random: two holders that collide do not in step


@contextlib.contextmanager
def held(backend: Backend, *, exclusive: bool, timeout: float, busy: str) -> Iterator[None]:
    """Hold the store shared or exclusively; raise :class:`StoreBusyError` (with ``busy``
    as its message) if that is not possible within ``timeout`` seconds."""
    mode = "exclusive" if exclusive else "shared"
    rel = f"{LOCK_DIR}/{mode}-{backend.writer_id}-{uuid.uuid4().hex[:12]}.json"
    deadline = time.monotonic() + timeout
    while True:
        since = time.time()
        _write(backend, rel, exclusive, since)
        if not _conflicts(backend, own=rel, exclusive=exclusive):
            break
        backend.remove(rel)
        if time.monotonic() > deadline:
            raise StoreBusyError(busy)
        time.sleep(random.uniform(*_PAUSE_S))
    stop = threading.Event()
    refresher = threading.Thread(target=_refresh, args=(backend, rel, exclusive, since, stop),
                                 name="ckpt-lock", daemon=True)
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join()
        backend.remove(rel)


def remove_stale(backend: Backend, *, dry_run: bool = False) -> int:
    """Remove lock objects whose holders died or stopped refreshing them; returns how many."""
    stale = [h.rel for h in _holders(backend) if h.stale]
    if not dry_run:
        for rel in stale:
            backend.remove(rel)
    return len(stale)


def abort_abandoned_uploads(backend: Backend, under: str, *, dry_run: bool = False) -> int:
    """Abort the incomplete multipart uploads below ``under`` begun before the oldest live
    lock was taken (their writers are gone: call it holding the store exclusively); returns
    how many. S3 only: other stores have nothing to abort, and 0 is returned."""
    if "s3" not in _protocols(backend.fs):
        return 0
    live = [h.since for h in _holders(backend) if not h.stale]
    before = min(live, default=time.time())
    bucket, _, prefix = backend.path(under).partition("/")
    doomed = [u for u in _uploads(backend, under, bucket, prefix.rstrip("/") + "/")
              if u["Initiated"].timestamp() < before]
    if not dry_run:
        for upload in doomed:
            with contextlib.suppress(FileNotFoundError):  # finished or aborted meanwhile
                backend.call("aborting an incomplete upload under", under, backend.fs.call_s3,
                             "abort_multipart_upload", Bucket=bucket, Key=upload["Key"],
                             UploadId=upload["UploadId"])
    return len(doomed)


def this_process() -> dict[str, Any]:
    """What a lock object records of its holder, so others can tell when it is gone."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
            "pidns": _pid_namespace()}


def _write(backend: Backend, rel: str, exclusive: bool, since: float) -> None:
    doc = {"exclusive": exclusive, "holder": backend.writer_id, "time": time.time(),
           "since": since, **this_process()}
    backend.write_atomic(rel, [json.dumps(doc).encode()])


def _refresh(backend: Backend, rel: str, exclusive: bool, since: float,
             stop: threading.Event) -> None:
    while not stop.wait(REFRESH_S):
        with contextlib.suppress(Exception):  # the next try, or staleness, deals with it
            _write(backend, rel, exclusive, since)


def _conflicts(backend: Backend, *, own: str, exclusive: bool) -> bool:
    for h in _holders(backend):
        if h.rel == own or h.stale:
            continue
        if exclusive or h.rel.startswith(f"{LOCK_DIR}/exclusive-"):
            return True
    return False


@dataclass(frozen=True)
class _Holder:
    rel: str
    since: float  # when the holder took the store (its own clock)
    stale: bool  # its holder died or stopped refreshing it: it holds nothing


def _holders(backend: Backend) -> Iterator[_Holder]:
    """Every lock object, and whether its holder still holds the store."""
    now = time.time()
    for name in backend.listdir(LOCK_DIR):
        rel = f"{LOCK_DIR}/{name}"
        try:
            doc = json.loads(backend.read_bytes(rel))
            held_at = float(doc["time"])
        except FileNotFoundError:
            continue  # released while we listed
        except (ValueError, KeyError, TypeError):
            yield _Holder(rel, 0.0, True)  # not one of ours, or torn: it holds nothing
            continue
        since = doc.get("since", held_at)
        since = float(since) if isinstance(since, (int, float)) else held_at
        yield _Holder(rel, since, now - held_at > STALE_S or _gone(doc))


def _gone(doc: dict[str, Any]) -> bool:
    """Whether a lock's holder is known to have died: a process on this host (and in this
    pid namespace: containers may share a host name) that no longer runs, or whose pid now
    belongs to a process started at another time. Anything else may still live."""
    pid = doc.get("pid")
    if (doc.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0
            or doc.get("pidns") != _pid_namespace()):
        return False
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # it runs, as another user
    start = doc.get("start")
    return start is not None and _start_time(pid) not in (None, start)


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started, as a token that differs for a later process given the
    same pid: boot id and start time in clock ticks from ``/proc`` (Linux), else psutil's
    creation time, else None (not known: pid reuse cannot be told)."""
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat.rpartition(")")[2].split()[19]  # field 22, counted after "(comm)"
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{ticks}"
    try:
        import psutil  # type: ignore[import-untyped]

        return f"psutil:{psutil.Process(pid).create_time():.3f}"
    except Exception:  # not installed, or no such process
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _uploads(backend: Backend, under: str, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """The incomplete multipart uploads of ``bucket`` under ``prefix`` (every page)."""
    found: list[dict[str, Any]] = []
    markers: dict[str, str] = {}
    while True:
        page = backend.call("listing the incomplete uploads under", under, backend.fs.call_s3,
                            "list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
        found.extend(page.get("Uploads", ()))
        if not page.get("IsTruncated"):
            return found
        markers = {"KeyMarker": page["NextKeyMarker"],
                   "UploadIdMarker": page["NextUploadIdMarker"]}
