"""Store locks on object stores: one small object per holder under ``locks/``.

A local store is locked with ``flock`` on its ``.lock`` file. Object stores have no locks,
so each holder writes a lock object, then lists the others (S3, GCS and Azure list what
was written before the listing began):

- a saver (shared) backs off while another holder has the store exclusively;
- gc (exclusive) backs off while anyone else holds it at all.

Of two holders that conflict, the one that lists second always sees the first, so they
never both go on; at worst both back off and try again after a random pause. This is how
restic locks a repository in a bucket.

A holder that dies leaves its object behind. Holders rewrite theirs every
:data:`REFRESH_S`, so an object older than :data:`STALE_S` belongs to nobody: it is
ignored, and gc removes it.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator

from ..errors import StoreBusyError
from .backend import Backend

__all__ = ["LOCK_DIR", "REFRESH_S", "STALE_S", "held", "remove_stale"]

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
        _write(backend, rel, exclusive)
        if not _conflicts(backend, own=rel, exclusive=exclusive):
            break
        backend.remove(rel)
        if time.monotonic() > deadline:
            raise StoreBusyError(busy)
        time.sleep(random.uniform(*_PAUSE_S))
    stop = threading.Event()
    refresher = threading.Thread(target=_refresh, args=(backend, rel, exclusive, stop),
                                 name="ckpt-lock", daemon=True)
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join()
        backend.remove(rel)


def remove_stale(backend: Backend, *, dry_run: bool = False) -> int:
    """Remove lock objects whose holders stopped refreshing them; returns how many."""
    stale = [rel for rel, held_at in _holders(backend) if time.time() - held_at > STALE_S]
    if not dry_run:
        for rel in stale:
            backend.remove(rel)
    return len(stale)


def _write(backend: Backend, rel: str, exclusive: bool) -> None:
    doc = {"exclusive": exclusive, "holder": backend.writer_id, "time": time.time()}
    backend.write_atomic(rel, [json.dumps(doc).encode()])


def _refresh(backend: Backend, rel: str, exclusive: bool, stop: threading.Event) -> None:
    while not stop.wait(REFRESH_S):
        with contextlib.suppress(Exception):  # the next try, or staleness, deals with it
            _write(backend, rel, exclusive)


def _conflicts(backend: Backend, *, own: str, exclusive: bool) -> bool:
    now = time.time()
    for rel, held_at in _holders(backend):
        if rel == own or now - held_at > STALE_S:
            continue
        if exclusive or rel.startswith(f"{LOCK_DIR}/exclusive-"):
            return True
    return False


def _holders(backend: Backend) -> Iterator[tuple[str, float]]:
    """Every lock object with the time its holder last wrote it."""
    for name in backend.listdir(LOCK_DIR):
        rel = f"{LOCK_DIR}/{name}"
        try:
            held_at = float(json.loads(backend.read_bytes(rel))["time"])
        except FileNotFoundError:
            continue  # released while we listed
        except (ValueError, KeyError, TypeError):
            held_at = 0.0  # not one of ours, or torn: it holds nothing
        yield rel, held_at
