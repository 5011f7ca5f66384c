"""BLAKE3, the store's one hash: blob names, tensor digests, metadata seals, file checks.

Every byte a save writes and a restore reads passes through here, so the loops are the hot
path: each hands blake3 the chunk it read (no copy; a reused buffer where the file is local),
and lets blake3 hash with several threads where the input is large enough to gain from it.

:func:`verify_stream` is the check a large blob gets as it streams to its consumer: hash and
count the bytes as they pass, then compare them with the digest and size the manifest lists.
:func:`mismatch` puts a failed comparison into words every check uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import BinaryIO, TypeAlias

import blake3

from ..errors import IntegrityError

__all__ = ["CHUNK", "MISLISTED", "hash_bytes", "hash_chunks", "hash_file", "hash_stream",
           "hasher", "mismatch", "verify_stream"]

CHUNK = 8 << 20  # bytes read at a time when streaming
THREADS_MIN = 4 << 20  # hash with several threads from this many bytes
MISLISTED = "listed as"  # a problem starting so: sound bytes, listed with the wrong size

Chunk: TypeAlias = bytes | bytearray | memoryview


def hasher(*, threads: bool = True) -> blake3.blake3:
    """A fresh BLAKE3 hasher. ``threads``: let blake3 spread large updates over threads
    (``AUTO``); off for updates of a MiB or so, which gain nothing from it."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO if threads else 1)


def hash_bytes(data: Chunk) -> str:
    """The hex digest of one buffer."""
    return hasher(threads=memoryview(data).nbytes >= THREADS_MIN).update(data).hexdigest()


def hash_chunks(chunks: Iterable[Chunk]) -> str:
    """The hex digest of the chunks joined (they are not joined)."""
    chunks = list(chunks)
    total = sum(memoryview(c).nbytes for c in chunks)
    h = hasher(threads=total >= THREADS_MIN)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def hash_stream(f: BinaryIO, *, sink: Callable[[bytes], object] | None = None,
                progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Read ``f`` to its end, :data:`CHUNK` bytes at a time: (hex digest, bytes read). Each
    chunk goes on to ``sink`` (e.g. a file's ``write``) and its length to ``progress`` as
    it is hashed."""
    h = hasher()
    got = 0
    if sink is None and progress is None:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            got += len(chunk)
        return h.hexdigest(), got
    write, report = sink or _ignore, progress or _ignore
    while chunk := f.read(CHUNK):
        h.update(chunk)
        write(chunk)
        got += len(chunk)
        report(len(chunk))
    return h.hexdigest(), got


def hash_file(path: str | os.PathLike[str], *, chunk_size: int = CHUNK,
              threads: bool = True) -> tuple[str, int]:
    """Hash a local file through one reused buffer of ``chunk_size`` bytes (nothing is
    allocated per chunk): (hex digest, bytes read)."""
    h = hasher(threads=threads)
    got = 0
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            got += n
    return h.hexdigest(), got


def mismatch(digest: str, size: int, got: int, actual: str) -> tuple[str | None, bool]:
    """What is wrong with ``got`` bytes hashing to ``actual`` where ``size`` bytes hashing to
    ``digest`` were expected (None: nothing), and whether the bytes are bad (they do not
    hash to ``digest``; sound bytes listed with the wrong size are not)."""
    if actual == digest:
        if got == size:
            return None, False
        return (f"{MISLISTED} {size} bytes but holds {got} (the blob is intact: the "
                "manifest is wrong)"), False
    if got < size:
        return f"truncated ({got} of {size} bytes)", True
    if got > size:
        return f"corrupt ({got} bytes, expected {size})", True
    return "corrupt (hash mismatch)", True


def verify_stream(f: BinaryIO, digest: str, size: int, *, what: str, after: str = "",
                  sink: Callable[[bytes], object] | None = None,
                  progress: Callable[[int], None] | None = None,
                  on_bad: Callable[[], bool] | None = None) -> None:
    """Read ``f`` to its end as :func:`hash_stream` does (``sink`` and ``progress`` see every
    chunk), then raise ``IntegrityError("{what} is {problem}{after}")`` unless exactly
    ``size`` bytes hashing to ``digest`` came. ``on_bad`` runs for bytes that do not hash to
    ``digest`` (e.g. to quarantine them); when it returns True the problem says
    ``; quarantined``."""
    actual, got = hash_stream(f, sink=sink, progress=progress)
    problem, bad = mismatch(digest, size, got, actual)
    if bad and on_bad is not None and on_bad():
        problem = f"{problem}; quarantined"
    if problem is not None:
        raise IntegrityError(f"{what} is {problem}{after}")


def _ignore(_: object) -> None:
    pass
