"""Content-addressed blobs: named by the BLAKE3 hash of their bytes, verified on every read.

``blobs/<first two hex>/<hash>``. A blob is written only if the store lacks it, so saving
the same bytes twice costs a hash and a stat. Tensors travel as safetensors files: large
tensors one per blob (so an unchanged tensor is never written again), small ones packed
together so a model's hundreds of biases do not become hundreds of files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import blake3

from ..errors import IntegrityError
from ..types import TensorData
from . import tensorfile
from .backend import Backend, fsync_dir

__all__ = ["BlobStore", "PutResult", "TensorRef"]

PACK_THRESHOLD = 1 << 20  # tensors below 1 MiB are packed together...
PACK_LIMIT = 16 << 20  # ...into safetensors files of at most 16 MiB
INLINE_LIMIT = 64 << 20  # files up to this size are read whole; larger ones are streamed
_HASH_THREADS_MIN = 4 << 20  # hash with several threads above this many bytes
_READ_CHUNK = 8 << 20


def blob_path(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest}"


def hash_stream(f: BinaryIO) -> str:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    while chunk := f.read(_READ_CHUNK):
        hasher.update(chunk)
    return str(hasher.hexdigest())


def hash_chunks(chunks: Iterable[bytes | bytearray | memoryview]) -> str:
    chunks = list(chunks)
    total = sum(memoryview(c).nbytes for c in chunks)
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO if total >= _HASH_THREADS_MIN else 1)
    for chunk in chunks:
        hasher.update(chunk)
    return str(hasher.hexdigest())


@dataclass(frozen=True)
class PutResult:
    digest: str
    size: int
    new: bool


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives: the blob, its key inside that safetensors file, the sizes.

    ``digest`` identifies the tensor's content: the blob's hash when the tensor has a blob
    of its own, the BLAKE3 of its bytes when it is packed with others. Equal digests (with
    equal dtype and shape) mean equal tensors, so checkpoints can be diffed from manifests.
    """

    blob: str
    key: str
    nbytes: int
    blob_size: int
    digest: str


class BlobStore:
    """Put, read and verify blobs under one backend."""

    def __init__(self, backend: Backend, *, workers: int | None = None) -> None:
        self.backend = backend
        self.workers = workers or (4 if backend.is_local else 16)

    # -- writing -------------------------------------------------------------------------
    def put(self, chunks: Sequence[bytes | memoryview], *, durable: bool = True) -> PutResult:
        digest = hash_chunks(chunks)
        size = sum(memoryview(c).nbytes for c in chunks)
        rel = blob_path(digest)
        if self.backend.exists(rel):
            return PutResult(digest, size, new=False)
        self.backend.write_atomic(rel, list(chunks), durable=durable, sync_dir=False)
        return PutResult(digest, size, new=True)

    def put_many(self, items: Sequence[Sequence[bytes | memoryview]], *,
                 durable: bool = True,
                 progress: Callable[[int], None] | None = None) -> list[PutResult]:
        """Put several blobs in parallel; the returned list is in input order."""
        def one(chunks: Sequence[bytes | memoryview]) -> PutResult:
            result = self.put(chunks, durable=durable)
            if progress is not None:
                progress(result.size)
            return result

        if len(items) <= 1:
            results = [one(c) for c in items]
        else:
            with ThreadPoolExecutor(min(self.workers, len(items)),
                                    thread_name_prefix="ckpt-put") as pool:
                results = list(pool.map(one, items))
        if durable and self.backend.is_local:
            for digest in {r.digest[:2] for r in results if r.new}:
                fsync_dir(self.backend.path(f"blobs/{digest}"))
        return results

    def put_file(self, open_file: Callable[[], BinaryIO], size: int, *,
                 digest: str | None = None, known: Collection[str] = (),
                 durable: bool = True) -> PutResult:
        """Store one file's bytes. ``digest`` (e.g. from a hash cache) lets a blob the store
        already has (or is in ``known``) be skipped without reading the file at all."""
        if digest is not None and (digest in known or self.backend.exists(blob_path(digest))):
            return PutResult(digest, size, new=False)
        if size <= INLINE_LIMIT:
            with open_file() as f:
                data = f.read()
            if len(data) != size:
                raise OSError(f"the file changed while it was read ({len(data)} of {size} bytes)")
            return self.put([data], durable=durable)
        with open_file() as f:
            digest = hash_stream(f)
        rel = blob_path(digest)
        if digest in known or self.backend.exists(rel):
            return PutResult(digest, size, new=False)
        with open_file() as f:
            self.backend.write_stream(rel, f, durable=durable)
        return PutResult(digest, size, new=True)

    def existing(self, digests: Collection[str]) -> set[str]:
        """Which of ``digests`` the store has: one listing for many on remote stores."""
        if not digests:
            return set()
        if not self.backend.is_local and len(digests) > 32:
            return set(self.all_digests()) & set(digests)
        return {d for d in digests if self.backend.exists(blob_path(d))}

    def copy_from(self, other: BlobStore, digest: str, size: int, *, where: str,
                  durable: bool = True) -> PutResult:
        """Copy one verified blob from another store (if this one lacks it)."""
        if self.backend.exists(blob_path(digest)):
            return PutResult(digest, size, new=False)
        return self.put([memoryview(other.read(digest, size, where=where))], durable=durable)

    def put_tensors(self, tensors: Sequence[TensorData], *, durable: bool = True,
                    progress: Callable[[int], None] | None = None,
                    ) -> tuple[list[TensorRef], list[PutResult]]:
        """Store tensors as safetensors blobs; returns a ref per tensor and the blobs put."""
        groups = plan_groups(tensors)
        files = [tensorfile.encode_chunks({key: tensors[i] for key, i in group})
                 for group in groups]
        results = self.put_many(files, durable=durable, progress=progress)
        refs: list[TensorRef | None] = [None] * len(tensors)
        for group, result in zip(groups, results, strict=True):
            for key, i in group:
                digest = result.digest if key == "t" else hash_chunks([tensors[i].data])
                refs[i] = TensorRef(result.digest, key, tensors[i].nbytes, result.size, digest)
        return [r for r in refs if r is not None], results

    # -- reading -------------------------------------------------------------------------
    def read(self, digest: str, size: int, *, where: str) -> bytearray:
        """The blob's bytes, verified against its hash; errors name ``where``."""
        rel = blob_path(digest)
        try:
            buf = self.backend.readinto(rel, size)
        except FileNotFoundError as err:
            raise IntegrityError(f"{where}: blob {digest[:16]} is missing from the store; "
                                 "the checkpoint cannot be restored") from err
        except OSError as err:
            raise IntegrityError(f"{where}: blob {digest[:16]} could not be read ({err})") from err
        if hash_chunks([buf]) != digest:
            raise IntegrityError(f"{where}: blob {digest[:16]} is corrupt (its bytes do not "
                                 "match its BLAKE3 hash); restore an older checkpoint")
        return buf

    def read_tensors(self, digest: str, size: int, *, where: str) -> dict[str, TensorData]:
        return tensorfile.decode(self.read(digest, size, where=where), where=where)

    def read_many(self, items: Sequence[tuple[str, int, str]]) -> list[bytearray]:
        """Read and verify several blobs in parallel: ``(digest, size, where)`` each."""
        if len(items) <= 1:
            return [self.read(d, s, where=w) for d, s, w in items]
        with ThreadPoolExecutor(min(self.workers, len(items)),
                                thread_name_prefix="ckpt-read") as pool:
            return list(pool.map(lambda it: self.read(it[0], it[1], where=it[2]), items))

    def check(self, digest: str, size: int) -> str | None:
        """Re-hash a stored blob without keeping it; ``None`` if fine, else what is wrong."""
        rel = blob_path(digest)
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        got = 0
        try:
            if self.backend.is_local:
                with open(self.backend.path(rel), "rb", buffering=0) as f:
                    chunk = bytearray(_READ_CHUNK)
                    while n := f.readinto(chunk):
                        hasher.update(memoryview(chunk)[:n])
                        got += n
            else:
                data = self.backend.read_bytes(rel)
                hasher.update(data)
                got = len(data)
        except FileNotFoundError:
            return "missing"
        if got != size:
            return f"truncated ({got} of {size} bytes)"
        if hasher.hexdigest() != digest:
            return "corrupt (hash mismatch)"
        return None

    def all_digests(self) -> dict[str, str]:
        """Every blob in the store: digest -> relative path."""
        out = {}
        for rel in self.backend.walk_files("blobs"):
            name = os.path.basename(rel)
            if len(name) == 64:
                out[name] = rel
        return out


def plan_groups(tensors: Sequence[TensorData]) -> list[list[tuple[str, int]]]:
    """Which tensors share a blob: large ones alone (key ``t``), small ones packed in order."""
    groups: list[list[tuple[str, int]]] = []
    pack: list[tuple[str, int]] = []
    pack_bytes = 0
    for i, t in enumerate(tensors):
        if t.nbytes >= PACK_THRESHOLD:
            groups.append([("t", i)])
            continue
        if pack and pack_bytes + t.nbytes > PACK_LIMIT:
            groups.append(pack)
            pack, pack_bytes = [], 0
        pack.append((str(len(pack)), i))
        pack_bytes += t.nbytes
    if pack:
        groups.append(pack)
    return groups
