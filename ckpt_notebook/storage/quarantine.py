"""Quarantine: where blobs found bad go, so that the store stops vouching for them.

A blob whose stored bytes do not hash to its name (a flipped bit, a truncated or overwritten
file) is moved from ``blobs/`` to ``quarantine/<hash>``. The store then lacks it, so the next
save or copy holding those bytes writes them again, and every checkpoint naming it restores
again; ``ckpt repair --from OTHER_STORE`` fetches it from a healthy copy. The moved file stays
for inspection; ``gc`` removes those quarantined longer than :data:`MAX_AGE_S`.

Only the blob's own bytes condemn it: the caller hashes the whole stored file before it asks
for a move, never trusting a size or a hash a manifest claims (a damaged or hostile manifest
must not make a sound blob disappear). Every digest is proven to be 64 lowercase hex digits
before a path is built from it: digests come from manifests, which may hold ``../..``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from contextvars import ContextVar

from ..errors import CkptError, IntegrityError
from .backend import Backend
from .hashing import hash_stream

__all__ = ["HEAL_HINT", "MAX_AGE_S", "QUARANTINED", "absent", "clean", "entries", "move",
           "no_quarantine", "valid_digest"]

DIR = "quarantine"
MAX_AGE_S = 7 * 24 * 3600  # gc removes quarantined files older than this
HEAL_HINT = "save again from the same state, or `ckpt repair --from OTHER_STORE`"
QUARANTINED = "quarantined (found corrupt: its bytes did not match its hash)"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_ENABLED: ContextVar[bool] = ContextVar("ckpt_notebook_quarantine", default=True)


def valid_digest(digest: object) -> bool:
    """Whether ``digest`` is a blob name: 64 lowercase hex digits (a BLAKE3 hash)."""
    return isinstance(digest, str) and _DIGEST.fullmatch(digest) is not None


def checked(digest: str) -> str:
    """``digest``, proven to be a blob name; else :class:`IntegrityError`."""
    if not valid_digest(digest):
        shown = repr(digest)[:40] if isinstance(digest, str) else type(digest).__name__
        raise IntegrityError(f"{shown} is not a blob name (64 lowercase hex digits of a BLAKE3 "
                             "hash); the manifest naming it is damaged or hostile")
    return digest


def path(digest: str) -> str:
    return f"{DIR}/{checked(digest)}"


@contextlib.contextmanager
def no_quarantine() -> Iterator[None]:
    """Inside this block (in this thread), blobs found bad are reported but left in place:
    for dry runs that must change nothing."""
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def move(backend: Backend, rel: str, digest: str) -> bool:
    """Move the bad blob at ``rel`` to ``quarantine/<digest>``. Returns whether it moved:
    not when it is already gone, the store is read-only (a replica we may only read), or
    inside :func:`no_quarantine`. The caller forgets any listing that holds it."""
    if not _ENABLED.get():
        return False
    dest = path(digest)
    try:
        if backend.renames_atomically:
            return _move_renaming(backend, rel, dest, digest)
        # no rename (object stores): copy (which also gives the entry a fresh age), remove
        backend.call("quarantining", rel, backend.fs.copy, backend.path(rel), backend.path(dest))
        backend.remove(rel)
        return True
    except FileNotFoundError:
        return False  # gone already: another reader quarantined it
    except (OSError, CkptError):
        return False  # cannot write here; the caller's error still says what is wrong


def _move_renaming(backend: Backend, rel: str, dest: str, digest: str) -> bool:
    """Rename, then hash what moved: if another writer had just replaced the bad file with a
    sound one (renames are atomic, so it is one or the other), the sound one goes back."""
    src, dst = backend.path(rel), backend.path(dest)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)
    os.utime(dst)  # its age in quarantine counts from now
    with open(dst, "rb") as f:
        moved = hash_stream(f)[0]
    if moved != digest:
        return True
    with contextlib.suppress(FileExistsError):
        os.link(dst, src)
    os.unlink(dst)
    return False


def absent(backend: Backend, digest: str) -> str:
    """Why a blob is not in ``blobs/``: quarantined, or missing."""
    with contextlib.suppress(OSError, CkptError):
        if backend.exists(path(digest)):
            return QUARANTINED
    return "missing"


def entries(backend: Backend) -> dict[str, float]:
    """Every quarantined blob: digest -> when it was quarantined (epoch seconds)."""
    out = {}
    for name in backend.listdir(DIR):
        if valid_digest(name):  # names come from the store: only blob names are ours
            with contextlib.suppress(FileNotFoundError):
                out[name] = backend.mtime(path(name))
    return out


def clean(backend: Backend, *, max_age_s: float = MAX_AGE_S, dry_run: bool = False) -> int:
    """Remove quarantined files older than ``max_age_s``; returns how many (would) go."""
    now = time.time()
    old = [d for d, when in entries(backend).items() if now - when > max_age_s]
    if not dry_run:
        for digest in old:
            backend.remove(path(digest))
    return len(old)
