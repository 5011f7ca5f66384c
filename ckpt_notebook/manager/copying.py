"""Named, immutable checkpoints: copy a folder, file, archive, URL or checkpoint into one.

    ckpt_notebook.copy("models/", "resnet-v1")                     # into the current store
    ckpt_notebook.copy("latest", "baseline", to="s3://bucket/ckpts")

Only blobs the destination lacks travel; transfers run in parallel and transient failures
are retried; the manifest is written last and only if every blob arrived, so a failed copy
commits nothing. Names are write-once: a taken name raises ``CheckpointExistsError``, also
when two writers race for one name (the manifest is created exclusively: one wins).

"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import CheckpointExistsError, CkptError, IntegrityError, SourceError
from ..storage import Store
from ..storage.blobs import INLINE_LIMIT, PutResult
from ..storage.hashing import CHUNK, hasher
from ..storage.manifest import FileRecord, Manifest
from ..types import CheckpointInfo, Progress, utc_now, validate_name
from .archives import ArchiveLimits
from .committing import name_taken
from .environment import library_versions
from .sources import (
    LFS_MAGIC,
    HashCache,
    ReadStream,
    Source,
    SourceFile,
    check_not_lfs_pointer,
    expand_source,
    resolve_source,
)
from .transfers import Meter, open_store, parallel

__all__ = ["copy"]

# Errors a damaged archive raises while its members are read (never the store's own).
_ARCHIVE_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)


def _taken(name: str, dest: Store) -> CheckpointExistsError:
    return name_taken(name, dest)  # the words a Checkpointer's save uses too


def copy(src: str | os.PathLike[str], name: str, *, to: str | Store | None = None,
         store: str | Store | None = None, progress: Progress | None = None,
         hash_cache: HashCache | None = None,
         archive_limits: ArchiveLimits | Mapping[str, Any] | None = None) -> CheckpointInfo:
    """Copy ``src`` into a new named checkpoint ``name`` in ``to`` (default: the store).

    ``src`` is a folder, a file, an archive (extracted as it is imported), a URL (``s3://``,
    ``gs://``, ``az://``, ``hf://owner/repo[/sub][@rev]``, ``http(s)://``, ``ftp(s)://``,
    ``git+https://host/repo.git[@REV]``) or a checkpoint REF of ``store``; ``~`` and
    ``$VAR`` expand. A local path wins over a checkpoint of the same name.
    ``archive_limits`` raises (or lowers) what an archive may extract, e.g.
    ``{"size": "200G", "ratio": 1000, "entries": 10**6}`` (see :mod:`.archives`).
    """
    limits = ArchiveLimits.of(archive_limits)
    validate_name(name)
    source_store = open_store(store)
    dest = open_store(to) if to is not None else source_store
    if dest.exists(name):
        raise _taken(name, dest)
    src = expand_source(os.fspath(src))  # ~ and $VAR, for the API, magic and CLI alike
    skip = _store_inside(os.fspath(src), dest)
    cache = hash_cache if hash_cache is not None else _default_cache()
    try:
        source = resolve_source(os.fspath(src), source_store, cache=cache, skip=skip,
                                limits=limits)
        try:
            if source.checkpoint is not None:
                return _copy_checkpoint(source_store, source.checkpoint, dest, name, progress)
            return _import_files(source, dest, name, progress, cache)
        except _ARCHIVE_READ_ERRORS as err:
            raise SourceError(f"cannot read {source.description!r}: {type(err).__name__}: "
                              f"{err}; nothing was committed", path=source.description) from err
        finally:
            source.close()
    finally:
        if cache is not None:
            with contextlib.suppress(Exception):  # the cache only saves time; never fail on it
                if hash_cache is None:
                    cache.close()
                else:
                    cache.flush()


def _store_inside(src: str, dest: Store) -> Path | None:
    """The destination store's folder when it lies inside the folder being copied (it is
    left out of the copy); a folder inside the store cannot be copied into it."""
    store_folder = dest.backend.local_folder
    if store_folder is None or not os.path.isdir(src):
        return None
    root, folder = Path(store_folder).resolve(), Path(src).resolve()
    if folder.is_relative_to(root):
        raise SourceError(f"cannot copy {src!r} into the store {dest.url}: it is inside that "
                          "store", path=src, url=dest.url,
                          hint="copy a folder outside it, or copy to another store (--to)")
    return root if root.is_relative_to(folder) else None


def _default_cache() -> HashCache | None:
    try:
        return HashCache()
    except Exception:  # a read-only home must not stop a copy
        return None


def _sync_blob_dirs(dest: Store, results: list[PutResult]) -> None:
    """Make new blobs' names durable before the manifest names them (local stores)."""
    prefixes = {r.digest[:2] for r in results if r.new}
    if prefixes:
        dest.backend.sync_dirs([*(f"blobs/{p}" for p in prefixes), "blobs"])


def _commit(dest: Store, name: str, manifest: Manifest) -> None:
    try:
        dest.commit(manifest)
    except CheckpointExistsError as err:  # another writer took the name while we copied
        raise _taken(name, dest) from err


def _import_files(source: Source, dest: Store, name: str, progress: Progress | None,
                  cache: HashCache | None) -> CheckpointInfo:
    dest.ensure_writable()
    meter = Meter(source.total_bytes, progress)

    # The lock: gc must not collect blobs we count on before the manifest lands. The batch:
    # on remote stores, one listing answers every "do you have this blob?".
    cached = {f.digest for f in source.files if f.digest}
    vouched = _vouched(dest, source) & cached
    unknown = sum(1 for f in source.files if f.digest not in vouched)
    with dest.lock(), dest.blobs.batch(unknown):
        known = vouched | dest.blobs.existing(cached - vouched)

        def put(f: SourceFile) -> PutResult:
            opener = _lfs_checked(f) if f.check_lfs else f.open
            passes = None
            if f.size > INLINE_LIMIT:
                passes = _Passes(opener, f.size, f.relpath, meter)
                opener = passes.open
            result = dest.blobs.put_file(opener, f.size, digest=f.digest, known=known,
                                           where=f.relpath)
            if cache is not None and f.local_path and f.digest != result.digest:
                cache.put(f.local_path, result.digest, before=f.stat)
            meter.add(f.size - (passes.reported if passes is not None else 0))
            return result

        # a compressed tar streams its members in order: one at a time, never spooled
        results: list[PutResult] = ([put(f) for f in source.files] if source.in_order
                                    else parallel(dest, put, source.files))
        _sync_blob_dirs(dest, results)
        files = {f.relpath: FileRecord(r.digest, r.size, f.executable)
                 for f, r in zip(source.files, results, strict=True)}
        blobs = {r.digest: r.size for r in results}
        info = CheckpointInfo(id=name, name=name, kind="files", created=utc_now(),
                              logical_bytes=source.total_bytes,
                              new_bytes=sum({r.digest: r.size for r in results if r.new}
                                            .values()),
                              source=source.description)
        _commit(dest, name, Manifest(info, blobs, {}, files, library_versions()))
    return info


def _vouched(dest: Store, source: Source) -> set[str]:
    """The blobs of the newest earlier copy of the same source into ``dest``. A committed
    manifest vouches for its blobs (they are written before it, and gc keeps every blob a
    manifest names), so an unchanged re-copy to a remote store needs neither a listing of
    every blob nor a request per file: one small manifest read instead."""
    if dest.backend.stat_is_cheap:  # a stat per blob is as cheap as reading a manifest
        return set()
    prior = [i for i in dest.list() if i.source == source.description and i.kind == "files"]
    if not prior:
        return set()
    try:
        return set(dest.manifest(prior[-1].id).blobs)
    except (CkptError, OSError):
        return set()


class _Passes:
    """Opens a large file for each pass ``put_file`` makes over it (hash, then write) and
    fails a pass whose bytes differ from the first one's, so a file that changes between
    the passes can never be stored under the first pass's hash. Reports progress as it
    reads (half the bytes per pass, for the two passes)."""

    def __init__(self, opener: Callable[[], BinaryIO], size: int, where: str,
                 meter: Meter) -> None:
        self.opener, self.size, self.where, self.meter = opener, size, where, meter
        self.first: str | None = None
        self.passes = 0
        self.reported = 0
        self._lock = threading.Lock()

    def open(self) -> BinaryIO:
        with self._lock:
            self.passes += 1
            report = self.passes <= 2
        return _CheckedReader(self.opener(), self, report)  # type: ignore[return-value]

    def finished(self, digest: str, count: int) -> None:
        if count != self.size:
            raise IntegrityError(f"{self.where}: read {count} bytes, expected {self.size}: "
                                 "the file changed while it was copied; copy it again")
        with self._lock:
            if self.first is None:
                self.first = digest
            elif digest != self.first:
                raise IntegrityError(f"{self.where}: the file changed while it was copied; "
                                     "nothing was committed; copy it again")

    def progress(self, n: int) -> None:
        half = n // 2
        with self._lock:
            self.reported += half
        self.meter.add(half)


class _CheckedReader(ReadStream):
    def __init__(self, raw: BinaryIO, passes: _Passes, report: bool) -> None:
        super().__init__()
        self.raw, self.passes, self.report = raw, passes, report
        self._restart()

    def _restart(self) -> None:
        self.hasher = hasher(threads=False)
        self.count = 0
        self.done = False

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise io.UnsupportedOperation("only rewinding is supported")
        self.raw.seek(0)
        self._restart()
        return 0

    def read(self, n: int | None = -1) -> bytes:
        data = self.raw.read(-1 if n is None else n)
        if data:
            self.hasher.update(data)
            self.count += len(data)
            if self.report:
                self.passes.progress(len(data))
        elif not self.done and n != 0:
            self.done = True
            self.passes.finished(self.hasher.hexdigest(), self.count)
        return bytes(data)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(CHUNK):
            chunks.append(chunk)
        self.read(CHUNK)  # reach EOF: the check runs
        return b"".join(chunks)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()
        super().close()


def _lfs_checked(f: SourceFile) -> Callable[[], BinaryIO]:
    """Refuse a Git LFS pointer served in place of the file, whatever size was listed."""
    def opener() -> BinaryIO:
        handle = f.open()
        head = b""
        while len(head) < len(LFS_MAGIC) and (more := handle.read(len(LFS_MAGIC) - len(head))):
            head += more
        try:
            check_not_lfs_pointer(head, where=f.relpath, advice=f.lfs_advice)
        except CkptError:
            handle.close()
            raise
        return _Prefixed(head, handle)  # type: ignore[return-value]

    return opener


class _Prefixed(ReadStream):
    """``head`` (already read from ``rest``) followed by the rest of ``rest``."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        super().__init__()
        self.head, self.rest = head, rest

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise io.UnsupportedOperation("only rewinding is supported")
        self.rest.seek(0)
        self.head = b""
        return 0

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        if self.head:
            data, self.head = self.head[:n], self.head[n:]
            if len(data) < n:
                data += self.rest.read(n - len(data))
            return data
        return bytes(self.rest.read(n))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.rest.close()
        super().close()


def _copy_checkpoint(src: Store, info: CheckpointInfo, dest: Store, name: str,
                     progress: Progress | None) -> CheckpointInfo:
    doc = src.manifest(info.id)
    blobs = doc.blobs
    where = f"checkpoint {info.id}"
    new_bytes = 0
    dest.ensure_writable()
    # held until the manifest lands: gc must not take the blobs in between
    with dest.lock(), dest.blobs.batch(len(blobs)):
        # A blob the destination holds with the wrong size is checked, and if bad,
        # quarantined and copied again; a flipped byte of the right size is left to `verify`
        # (re-hashing every blob the destination has would cost a full read of them).
        missing = sorted(dest.blobs.lacking(blobs))
        if missing and dest.url == src.url:
            raise IntegrityError(f"{where}: {len(missing)} of its blobs are missing from "
                                 f"{src.url} (e.g. {missing[0][:16]}); it cannot be copied "
                                 "(`ckpt verify` lists them)")
        if missing:
            meter = Meter(sum(blobs[d] for d in missing), progress)
            results = parallel(dest, lambda d: _copy_blob(src, dest, d, blobs[d], where, meter),
                                missing)
            _sync_blob_dirs(dest, results)
            new_bytes = sum(r.size for r in results if r.new)
        # The copy keeps its source's creation time: it holds that moment's training state,
        # so it must not become `latest` ahead of newer training checkpoints.
        named = CheckpointInfo.from_json({**info.to_json(), "id": name, "name": name,
                                          "parent": info.id, "new_bytes": new_bytes,
                                          "source": f"{src.url}#{info.id}",
                                          "committed": True})
        _commit(dest, name, dataclasses.replace(doc, checkpoint=named))
    return named


def _copy_blob(src: Store, dest: Store, digest: str, size: int, where: str,
               meter: Meter) -> PutResult:
    """Copy one blob, verified (a bad one is quarantined in ``src`` and raises); large ones
    stream through a temp file, never into memory."""
    return dest.blobs.copy_from(src.blobs, digest, size, where=where, progress=meter.add)
