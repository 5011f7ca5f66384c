"""Verify-then-read-in-place: the fast restore path for large tensors.

Restoring a model normally reads every blob into fresh memory, verifies it, then copies it
into the model. For a blob holding one large tensor that is wasteful: here each blob is
first verified by hashing it through a small reused buffer (nothing is loaded until every
blob verifies, so restore stays all-or-nothing), then its tensor bytes are read straight
into the destination's memory (the second read comes from the page cache). Blobs are
immutable and content-addressed, so the verified bytes are the bytes read. A blob that fails
verification is quarantined (see :mod:`.quarantine`), so the next save of its bytes heals it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..errors import IntegrityError
from .blobs import BlobStore, blob_path
from .hashing import hash_file
from .quarantine import HEAL_HINT

__all__ = ["read_tensor_into", "verify_blobs"]

_VERIFY_CHUNK = 1 << 20  # small enough to stay in cache while it is hashed


def _verify_local(blobs: BlobStore, digest: str, size: int) -> str | None:
    """:meth:`BlobStore.check` through a small buffer that stays in cache while hashed (one
    thread each: the blobs are verified in parallel)."""
    try:
        actual, got = hash_file(blobs.backend.path(blob_path(digest)),
                                chunk_size=_VERIFY_CHUNK, threads=False)
    except FileNotFoundError:
        return blobs.absent(digest)
    return blobs.judge(digest, size, got, actual)[0]


def verify_blobs(blobs: BlobStore, items: Sequence[tuple[str, int, str]]) -> None:
    """Re-hash ``(digest, size, where)`` blobs in parallel; raise for the first bad one."""
    def one(item: tuple[str, int, str]) -> tuple[str, str, str | None]:
        digest, size, where = item
        check = _verify_local if blobs.backend.reads_in_place else BlobStore.check
        return digest, where, check(blobs, digest, size)

    with ThreadPoolExecutor(min(blobs.workers, max(1, len(items))),
                            thread_name_prefix="ckpt-verify") as pool:
        for digest, where, problem in pool.map(one, items):
            if problem is not None:
                raise IntegrityError(f"{where}: blob {digest[:16]} is {problem}; nothing was "
                                     f"restored ({HEAL_HINT}; or restore an older checkpoint)")


def read_tensor_into(blobs: BlobStore, digest: str, key: str, dest: memoryview, *,
                     where: str) -> None:
    """Read tensor ``key`` of a verified safetensors blob into ``dest`` (exactly its size)."""
    rel = blob_path(digest)
    if not blobs.backend.reads_in_place:
        from . import tensorfile

        data = tensorfile.decode(blobs.backend.read_bytes(rel), where=where)[key].data
        dest[:] = data.cast("B")
        return
    with open(blobs.backend.path(rel), "rb", buffering=0) as f:
        (n,) = struct.unpack("<Q", f.read(8))
        begin, end = json.loads(f.read(n))[key]["data_offsets"]
        if end - begin != dest.nbytes:
            raise IntegrityError(f"{where}: blob {digest[:16]} holds {end - begin} bytes for "
                                 f"{key!r}, expected {dest.nbytes}")
        f.seek(8 + n + begin)
        got = 0
        while got < dest.nbytes:
            k = f.readinto(dest[got:])
            if not k:
                raise IntegrityError(f"{where}: blob {digest[:16]} ended early")
            got += k
