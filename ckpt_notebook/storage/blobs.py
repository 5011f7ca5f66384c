"""Content-addressed blobs: named by the BLAKE3 hash of their bytes, verified on every read.

``blobs/<first two hex>/<hash>``. A blob is written only if the store lacks it, so saving
the same bytes twice costs a hash and a stat. Tensors travel as safetensors files: large
tensors one per blob (so an unchanged tensor is never written again), small ones packed
together so a model's hundreds of biases do not become hundreds of files.

On remote stores an existence check is a request (two on S3 for a missing key: a HEAD, then
a listing to rule out a "directory"), so work on many blobs runs inside :meth:`BlobStore.batch`:
the store's blobs are listed once (one request per 1,000) and every check inside the block is
answered from that listing and the block's own writes.

A blob found bad (its bytes do not hash to its name) is quarantined (see :mod:`.quarantine`):
the store then lacks it, so the next save or copy of those bytes writes them again.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeAlias, TypeVar

from ..errors import IntegrityError, SourceError
from ..types import DATA_PHASE, OWN_BLOB_MIN, TensorData
from . import quarantine, tensorfile
from .backend import Backend
from .hashing import hash_bytes, hash_chunks, hash_file, hash_stream, mismatch, verify_stream
from .quarantine import HEAL_HINT, valid_digest

__all__ = ["BlobStore", "PutResult", "TensorRef", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")

PACK_THRESHOLD = OWN_BLOB_MIN  # tensors below 1 MiB are packed together...
PACK_LIMIT = 16 << 20  # ...into safetensors files of at most 16 MiB
INLINE_LIMIT = 64 << 20  # files up to this size are read whole; larger ones are streamed
LIST_MIN = 32  # remote stores: checking this many blobs or more lists the store once instead


def blob_path(digest: str) -> str:
    return f"blobs/{quarantine.checked(digest)[:2]}/{digest}"


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, *,
                 name: str = "ckpt") -> list[R]:
    """``[fn(i) for i in items]`` on up to ``workers`` threads, in input order.

    The first failure cancels the work not yet started and is raised once the running calls
    finish, so a store that is down fails a copy after one item's retries, not after every
    item's (``ThreadPoolExecutor.map`` in a ``with`` block would run them all first).
    """
    if len(items) <= 1 or workers <= 1:
        return [fn(i) for i in items]
    pool = ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix=name)
    try:
        futures = [pool.submit(fn, i) for i in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            wait(futures)
            failed.result()  # raises
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


Known: TypeAlias = str | Callable[[], str | None]
"""A blob's digest known without hashing, or a check that returns it (None: hash it)."""


@dataclass
class _Inventory:
    """Digests a remote store holds, from one listing, plus those written since."""

    digests: set[str]
    removals: int  # the backend's removal count when listed: any remove since makes it stale
    sizes: dict[str, int] = field(default_factory=dict)  # of the listed ones
    lock: threading.Lock = field(default_factory=threading.Lock)


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
        self.workers = workers or backend.workers
        self._inventory: _Inventory | None = None
        self._batch_depth = 0
        self._batch_lock = threading.Lock()

    # -- existence -----------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self, expected: int) -> Iterator[None]:
        """A block that puts or checks about ``expected`` blobs.

        On a remote store, when ``expected >= LIST_MIN``, the store's blobs are listed once on
        entry and every existence check inside (``put``, ``put_file``, ``existing``,
        ``copy_from``, from any thread) is answered from that listing plus the blobs written
        since, instead of one or two requests per blob. Elsewhere it does nothing. Blocks
        nest and may overlap across threads; the listing lives until the last one exits, and
        is dropped early if this process removes anything from the store.

        The listing costs one request per 1,000 blobs in the store, the checks it replaces one
        or two per blob put: a win unless the store is far larger than the batch (then the
        work the batch does, uploading, usually dwarfs it anyway). As with a check per blob,
        another process's gc could remove a listed blob before the commit, unless the caller
        holds the store (:meth:`Store.lock`) from the block to the commit, as saves and copies
        do: gc holds it exclusively, on object stores too.
        """
        if self.backend.stat_is_cheap or expected < LIST_MIN:
            yield
            return
        with self._batch_lock:
            if self._listed() is None:
                removals = self.backend.removals
                sizes = self._listed_sizes()
                self._inventory = _Inventory(set(sizes), removals, sizes)
            self._batch_depth += 1
        try:
            yield
        finally:
            with self._batch_lock:
                self._batch_depth -= 1
                if self._batch_depth == 0:
                    self._inventory = None

    def _listed(self) -> _Inventory | None:
        inv = self._inventory
        if inv is not None and inv.removals == self.backend.removals:
            return inv
        return None

    def has(self, digest: str) -> bool:
        """Whether the store holds blob ``digest`` (inside a batch: from its listing)."""
        inv = self._listed()
        if inv is not None:
            return digest in inv.digests
        return self.backend.exists(blob_path(digest))

    def _wrote(self, digest: str) -> None:
        inv = self._inventory
        if inv is not None:
            with inv.lock:
                inv.digests.add(digest)
                inv.sizes.pop(digest, None)

    def _holds(self, digest: str, size: int) -> bool:
        """:meth:`has`, for bytes about to be put (``size`` is theirs, so it is true). Where a
        check is a stat, the stat also gives the size: a blob of another size cannot hold
        these bytes, so it is quarantined and the caller writes it again."""
        if not self.backend.stat_is_cheap:
            return self.has(digest)
        try:
            stored = os.stat(self.backend.path(blob_path(digest))).st_size
        except FileNotFoundError:
            return False
        if stored == size:
            return True
        self.quarantine(digest)
        return False

    def stored_sizes(self, digests: Collection[str]) -> dict[str, int | None]:
        """Which of ``digests`` the store has, with each one's stored size (None: not known,
        for a blob written since the batch's listing). Local: a stat each; remote: one
        listing (the batch's, or a fresh one for many), else a request each."""
        inv = self._listed()
        if inv is not None:
            return {d: inv.sizes.get(d) for d in digests if d in inv.digests}
        if not self.backend.stat_is_cheap and len(digests) >= LIST_MIN:
            listed = self._listed_sizes()
            return {d: listed[d] for d in digests if d in listed}
        out: dict[str, int | None] = {}
        for d in digests:
            with contextlib.suppress(FileNotFoundError):
                out[d] = self.backend.size(blob_path(d))
        return out

    def lacking(self, sizes: Mapping[str, int]) -> set[str]:
        """Which of the blobs ``sizes`` lists (digest -> size, from a manifest) the store
        lacks. One it holds with another size is checked (hashed): a bad one is quarantined
        and counts as lacking; a sound one (the manifest's size is wrong) counts as held, and
        the manifest fails its own checks when read. A cheap guard, not a verification: a
        blob of the right size with a flipped byte is found by ``verify`` or a restore."""
        stored = self.stored_sizes(set(sizes))
        out = set(sizes) - set(stored)
        for digest, size in stored.items():
            if size is not None and size != int(sizes[digest]):
                try:
                    bad = self._inspect(digest, int(sizes[digest]))[1]
                except FileNotFoundError:
                    bad = True
                if bad:
                    out.add(digest)
        return out

    # -- writing -------------------------------------------------------------------------
    def put(self, chunks: Sequence[bytes | memoryview], *, durable: bool = True) -> PutResult:
        digest = hash_chunks(chunks)
        size = sum(memoryview(c).nbytes for c in chunks)
        rel = blob_path(digest)
        if self._holds(digest, size):
            return PutResult(digest, size, new=False)
        self.backend.write_atomic(rel, list(chunks), durable=durable, sync_dir=False)
        self._wrote(digest)
        return PutResult(digest, size, new=True)

    def put_many(self, items: Sequence[Sequence[bytes | memoryview]], *,
                 durable: bool = True, first: Collection[int] = (),
                 digests: Sequence[Known | None] | None = None,
                 progress: Callable[[int], None] | None = None) -> list[PutResult]:
        """Put several blobs; the returned list is in input order.

        Hashing is CPU work and writing is I/O, so they run as a pipeline: the calling thread
        hashes the blobs one after another (a large one on every core), and as soon as a
        blob's name is known a worker thread asks the store for it and writes it if missing,
        while the next one is hashed. (Asking waits on the disk or the network too: a
        directory block the page cache dropped costs milliseconds.) Blobs whose indexes are
        in ``first`` (say, the tensors that probably changed since the last save) are hashed
        before the others, so their writes overlap the hashing of the rest; ``first``
        changes nothing but the order. The first failed write stops the hashing and is
        raised once the writes already running finish. A single blob (or ``workers=1``) is
        hashed and written in the calling thread.

        ``digests`` may name blobs whose hash the caller knows for certain (the same bytes
        were hashed before): those are not hashed again. An entry may also be a callable,
        run on the hashing thread in turn, that returns the digest when it can vouch for it
        (say, after comparing the bytes with a copy of ones that were hashed) and None when
        the blob must be hashed. Either way the store is asked whether it holds the blob
        (a quarantined one is written again).
        """
        results: list[PutResult | None] = [None] * len(items)
        hinted = set(first)
        order = sorted(range(len(items)), key=lambda i: i not in hinted)
        storing: dict[str, Future[bool]] = {}  # digest -> whether it was new
        pending: dict[int, tuple[str, int]] = {}  # index -> (digest, size) being stored
        failed = threading.Event()
        report = progress or _ignore
        inline = len(items) <= 1 or self.workers <= 1

        def store(index: int, digest: str, size: int) -> bool:
            """Write blob ``index`` unless the store has it; whether it was new."""
            try:
                new = not self._holds(digest, size)
                if new:
                    self.backend.write_atomic(blob_path(digest), list(items[index]),
                                              durable=durable, sync_dir=False)
                    self._wrote(digest)
            except BaseException:
                failed.set()
                raise
            report(size)
            return new

        pool = ThreadPoolExecutor(1 if inline else min(self.workers, len(items)),
                                  thread_name_prefix="ckpt-put")
        try:
            with self.batch(len(items)):
                for i in order:
                    if failed.is_set():
                        break
                    digest = _name(items[i], digests[i] if digests is not None else None)
                    size = sum(memoryview(c).nbytes for c in items[i])
                    if digest in storing:  # the same bytes earlier in this call
                        results[i] = PutResult(digest, size, new=False)
                        report(size)
                    elif inline:
                        results[i] = PutResult(digest, size, new=store(i, digest, size))
                    else:
                        storing[digest] = pool.submit(store, i, digest, size)
                        pending[i] = (digest, size)
                _first_failure(list(storing.values()))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for i, (digest, size) in pending.items():
            results[i] = PutResult(digest, size, new=storing[digest].result())
        done = [r for r in results if r is not None]
        if durable:
            self.backend.sync_dirs(f"blobs/{p}" for p in {r.digest[:2] for r in done if r.new})
        return done

    def put_file(self, open_file: Callable[[], BinaryIO], size: int, *,
                 digest: str | None = None, known: Collection[str] = (),
                 durable: bool = True, where: str = "the file") -> PutResult:
        """Store one file's bytes. ``digest`` (e.g. from a hash cache) lets a blob the store
        already has (or is in ``known``) be skipped without reading the file at all;
        ``where`` names the file in errors."""
        if digest is not None and (digest in known or self._holds(digest, size)):
            return PutResult(digest, size, new=False)
        if size <= INLINE_LIMIT:
            with open_file() as f:
                data = f.read()
            if len(data) != size:
                raise SourceError(f"{where} changed while it was read ({len(data)} of {size} "
                                  "bytes)", path=where)
            return self.put([data], durable=durable)
        with open_file() as f:
            digest = hash_stream(f)[0]
        rel = blob_path(digest)
        if digest in known or self._holds(digest, size):
            return PutResult(digest, size, new=False)
        with open_file() as f:
            self.backend.write_stream(rel, f, durable=durable)
        self._wrote(digest)
        return PutResult(digest, size, new=True)

    def existing(self, digests: Collection[str]) -> set[str]:
        """Which of ``digests`` the store has: one listing for many on remote stores."""
        if not digests:
            return set()
        inv = self._listed()
        if inv is not None:
            return {d for d in digests if d in inv.digests}
        if not self.backend.stat_is_cheap and len(digests) >= LIST_MIN:
            return set(self.all_digests()) & set(digests)
        return {d for d in digests if self.backend.exists(blob_path(d))}

    def copy_from(self, other: BlobStore, digest: str, size: int, *, where: str,
                  durable: bool = True, progress: Callable[[int], None] | None = None,
                  ) -> PutResult:
        """Copy one blob from another store (if this one lacks it), verified on the way: a
        bad one is quarantined *there* and raises. Large blobs stream through a temp file,
        never held in memory. ``progress`` gets byte counts as they arrive."""
        report = progress or _ignore
        if self.has(digest):
            report(size)
            return PutResult(digest, size, new=False)
        if size <= INLINE_LIMIT:
            result = self.put([memoryview(other.read(digest, size, where=where))],
                              durable=durable)
            report(size)
            return result
        with tempfile.TemporaryFile(prefix="ckpt-blob-") as spool:
            other.stream_into(digest, size, spool, where=where, progress=report)
            spool.seek(0)
            self.backend.write_stream(blob_path(digest), spool, durable=durable)
        self._wrote(digest)
        return PutResult(digest, size, new=True)

    def put_tensors(self, tensors: Sequence[TensorData], *, durable: bool = True,
                    first: Collection[int] = (), known: Mapping[int, Known] | None = None,
                    progress: Callable[[int], None] | None = None,
                    ) -> tuple[list[TensorRef], list[PutResult]]:
        """Store tensors as safetensors blobs; returns a ref per tensor and the blobs put.

        ``first``: indexes of tensors that probably changed; their blobs are hashed first.
        ``known``: index -> the digest of the blob that tensor had alone the last time its
        exact bytes were stored, or a callable that returns it when it can vouch for it;
        such a blob is not hashed again (see :meth:`put_many`)."""
        groups = plan_groups(tensors)
        files = [tensorfile.encode_chunks({key: tensors[i] for key, i in group},
                                          phase=DATA_PHASE if group[0][0] == "t" else None)
                 for group in groups]
        hinted = set(first)
        first_files = [g for g, group in enumerate(groups) if any(i in hinted for _, i in group)]
        known = known or {}
        digests = [known.get(group[0][1]) if group[0][0] == "t" else None for group in groups]
        results = self.put_many(files, durable=durable, first=first_files, digests=digests,
                                progress=progress)
        refs: list[TensorRef | None] = [None] * len(tensors)
        for group, result in zip(groups, results, strict=True):
            for key, i in group:
                digest = result.digest if key == "t" else hash_chunks([tensors[i].data])
                refs[i] = TensorRef(result.digest, key, tensors[i].nbytes, result.size, digest)
        return [r for r in refs if r is not None], results

    # -- reading -------------------------------------------------------------------------
    def read(self, digest: str, size: int, *, where: str) -> bytearray:
        """The blob's bytes, verified against its hash; errors name ``where``. A blob found
        bad is quarantined (see the module docstring) and the error says how to heal."""
        rel = blob_path(digest)
        try:
            buf = self.backend.readinto(rel, size)
        except FileNotFoundError as err:
            raise IntegrityError(f"{where}: blob {digest[:16]} is {self.absent(digest)} "
                                 f"(not in the store); {HEAL_HINT}") from err
        except OSError as err:
            if not self.backend.reads_in_place:  # the network, not the blob: it stays
                raise IntegrityError(f"{where}: blob {digest[:16]} could not be read "
                                     f"({err})") from err
            raise self._bad(digest, size, where, err) from err  # locally: a size mismatch
        if len(buf) != size or hash_chunks([buf]) != digest:
            raise self._bad(digest, size, where)
        return buf

    def _bad(self, digest: str, size: int, where: str,
             err: OSError | None = None) -> IntegrityError:
        """The error for a blob whose read went wrong, once its stored file is re-hashed
        (and quarantined if its bytes do not hash to its name)."""
        try:
            problem, bad = self._inspect(digest, size)
        except OSError as again:
            return IntegrityError(f"{where}: blob {digest[:16]} could not be read "
                                  f"({err or again})")
        if problem is None:  # sound again: another writer replaced it while we read
            return IntegrityError(f"{where}: blob {digest[:16]} changed while it was read; "
                                  "try again")
        hint = f"; {HEAL_HINT}, or restore an older checkpoint" if bad else ""
        return IntegrityError(f"{where}: blob {digest[:16]} is {problem}{hint}")

    def stream_into(self, digest: str, size: int, out: BinaryIO, *, where: str,
                    progress: Callable[[int], None] | None = None) -> None:
        """Write the blob's bytes to ``out`` as they are read, hashing them on the way; raise
        (and quarantine the blob) if they do not hash to its name. ``out`` then holds bad
        bytes: the caller discards it."""
        try:
            with self.backend.open_read(blob_path(digest)) as f:
                verify_stream(f, digest, size, sink=out.write, progress=progress,
                              on_bad=lambda: self.quarantine(digest),
                              what=f"{where}: blob {digest[:16]} in {self.backend.url}",
                              after="; nothing was committed")
        except FileNotFoundError as err:
            raise IntegrityError(f"{where}: blob {digest[:16]} is {self.absent(digest)} in "
                                 f"{self.backend.url}") from err

    def read_many(self, items: Sequence[tuple[str, int, str]]) -> list[bytearray]:
        """Read and verify several blobs in parallel: ``(digest, size, where)`` each."""
        return parallel_map(lambda it: self.read(it[0], it[1], where=it[2]), items,
                            self.workers, name="ckpt-read")

    def check(self, digest: str, size: int) -> str | None:
        """Re-hash a stored blob without keeping it; ``None`` if fine, else what is wrong.
        A blob whose bytes do not hash to its name is quarantined."""
        if not valid_digest(digest):
            return "not a blob name (the manifest is damaged or hostile)"
        try:
            return self._inspect(digest, size)[0]
        except FileNotFoundError:
            return self.absent(digest)

    def _inspect(self, digest: str, size: int) -> tuple[str | None, bool]:
        """Hash the stored file whole: (what is wrong or None, whether the blob is bad)."""
        rel = blob_path(digest)
        if self.backend.reads_in_place:
            actual, got = hash_file(self.backend.path(rel))
        elif size <= INLINE_LIMIT:
            data = self.backend.read_bytes(rel)
            actual, got = hash_bytes(data), len(data)
        else:  # a large remote blob is hashed as it streams, never held whole
            with self.backend.open_read(rel) as stream:
                actual, got = hash_stream(stream)
        return self.judge(digest, size, got, actual)

    def judge(self, digest: str, size: int, got: int, actual: str) -> tuple[str | None, bool]:
        """What is wrong with a stored blob of ``got`` bytes hashing to ``actual``, listed as
        ``size`` bytes, and whether the blob itself is bad (then it is quarantined)."""
        problem, bad = mismatch(digest, size, got, actual)
        if bad and self.quarantine(digest):
            problem = f"{problem}; quarantined"
        return problem, bad

    def absent(self, digest: str) -> str:
        """Why a blob is not there: quarantined, or missing."""
        return quarantine.absent(self.backend, digest)

    def quarantine(self, digest: str) -> bool:
        """Move a bad blob out of ``blobs/`` (see :mod:`.quarantine`), and out of this
        store's listing; whether it moved."""
        moved = quarantine.move(self.backend, blob_path(digest), digest)
        inv = self._inventory
        if inv is not None:
            with inv.lock:
                inv.digests.discard(digest)
        return moved

    def _listed_sizes(self) -> dict[str, int]:
        """Every blob of a remote store with its size, from one listing."""
        base = self.backend.path("blobs")
        try:
            found = self.backend.call("listing", "blobs", self.backend.fs.find, base,
                                      detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for path, entry in found.items():
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if valid_digest(name) and entry.get("type", "file") == "file":
                out[name] = int(entry.get("size") or 0)
        return out

    def all_digests(self) -> dict[str, str]:
        """Every blob in the store: digest -> relative path."""
        out = {}
        for rel in self.backend.walk_files("blobs"):
            name = os.path.basename(rel)
            if valid_digest(name):
                out[name] = rel
        return out


def _ignore(_: int) -> None:
    pass


def _name(chunks: Sequence[bytes | memoryview], known: Known | None) -> str:
    """A blob's digest: ``known``'s if it vouches for one, else its hash."""
    return (known() if callable(known) else known) or hash_chunks(chunks)


def _first_failure(futures: Sequence[Future[Any]]) -> None:
    """Wait for ``futures``; at the first failure cancel the rest, wait for those already
    running, and raise it."""
    wait(futures, return_when=FIRST_EXCEPTION)
    failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()),
                  None)
    if failed is not None:
        for future in futures:
            future.cancel()
        wait(futures)
        failed.result()  # raises


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
