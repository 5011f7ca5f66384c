"""Named, immutable checkpoints: copy a folder, file, archive, URL or checkpoint into one,
and materialize one into a local folder.

    ckpt_notebook.copy("models/", "resnet-v1")                     # into the current store
    ckpt_notebook.copy("latest", "baseline", to="s3://bucket/ckpts")
    ckpt_notebook.materialize("resnet-v1", "/tmp/resnet-v1")

Only blobs the destination lacks travel; transfers run in parallel and transient failures
are retried; the manifest is written last and only if every blob arrived, so a failed copy
commits nothing. Names are write-once: a taken name raises ``CheckpointExistsError``, also
when two writers race for one name (the manifest is created exclusively: one wins).

Materializing writes into a private staging folder first and moves the files into place with
the marker file (``.ckpt_notebook.json``) last, so a folder holding a marker is complete.
Materializing again reuses a folder whose files all still verify; a folder of the same
checkpoint that no longer verifies (a file edited or removed) is written again, and a folder
holding anything else is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import blake3

from ..errors import CheckpointExistsError, CkptError, IntegrityError
from ..storage import Store, tensorfile
from ..storage.backend import fsync_dir
from ..storage.blobs import INLINE_LIMIT, PutResult, blob_path, hash_chunks, parallel_map
from ..storage.store import writer_alive
from ..types import CheckpointInfo, format_bytes, utc_now, validate_name
from .environment import library_versions
from .refs import resolve_ref
from .sources import (
    LFS_MAGIC,
    MARKER,
    HashCache,
    ReadStream,
    Source,
    SourceFile,
    check_not_lfs_pointer,
    resolve_source,
    safe_relpath,
)

__all__ = ["MARKER", "PATH_ENV", "Materialized", "copy", "materialize", "materialize_report",
           "use", "verify_materialized"]

Progress = Callable[[int, int], None]
PATH_ENV = "CKPT_NOTEBOOK_CHECKPOINT_PATH"
_CHUNK = 8 << 20
_STAGING = ".ckpt-staging-"
# Errors a damaged archive raises while its members are read (never the store's own).
_ARCHIVE_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)


def _open_store(store: str | os.PathLike[str] | Store | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def _taken(name: str, dest: Store) -> CheckpointExistsError:
    return CheckpointExistsError(f"a checkpoint named {name!r} already exists in {dest.url}; "
                                 "names are write-once: pick another (e.g. add -v2)")


def copy(src: str | os.PathLike[str], name: str, *, to: str | Store | None = None,
         store: str | Store | None = None, progress: Progress | None = None,
         hash_cache: HashCache | None = None) -> CheckpointInfo:
    """Copy ``src`` into a new named checkpoint ``name`` in ``to`` (default: the store).

    ``src`` is a folder, a file, an archive (extracted as it is imported), a URL (``s3://``,
    ``gs://``, ``az://``, ``hf://owner/repo[/sub][@rev]``, ``http(s)://``) or a checkpoint
    REF of ``store``. A local path wins over a checkpoint of the same name.
    """
    validate_name(name)
    source_store = _open_store(store)
    dest = _open_store(to) if to is not None else source_store
    if dest.exists(name):
        raise _taken(name, dest)
    skip = _store_inside(os.fspath(src), dest)
    cache = hash_cache if hash_cache is not None else _default_cache()
    try:
        source = resolve_source(os.fspath(src), source_store, cache=cache, skip=skip)
        try:
            if source.checkpoint is not None:
                return _copy_checkpoint(source_store, source.checkpoint, dest, name, progress)
            return _import_files(source, dest, name, progress, cache)
        except _ARCHIVE_READ_ERRORS as err:
            raise CkptError(f"cannot read {source.description!r}: {type(err).__name__}: "
                            f"{err}; nothing was committed") from err
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
    if not (dest.backend.is_local and os.path.isdir(src)):
        return None
    root, folder = Path(dest.backend.root).resolve(), Path(src).resolve()
    if folder.is_relative_to(root):
        raise CkptError(f"cannot copy {src!r} into the store {dest.url}: it is inside that "
                        "store; copy a folder outside it, or copy to another store (--to)")
    return root if root.is_relative_to(folder) else None


def _default_cache() -> HashCache | None:
    try:
        return HashCache()
    except Exception:  # a read-only home must not stop a copy
        return None


class _Meter:
    """Thread-safe byte counter feeding a progress callback (called with the lock held, so
    it sees ``done`` only grow; callbacks are cheap: the bars throttle themselves)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:  # callbacks in order: a bar never steps back
            self.done += n
            if self.progress is not None:
                self.progress(self.done, self.total)


def _parallel(dest: Store, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """In parallel, in order; the first failure stops the rest (a dead store fails fast)."""
    return parallel_map(fn, items, dest.blobs.workers, name="ckpt-copy")


def _sync_blob_dirs(dest: Store, results: list[PutResult]) -> None:
    """Make new blobs' renames durable before the manifest names them (local stores)."""
    if not dest.backend.is_local:
        return
    prefixes = {r.digest[:2] for r in results if r.new}
    for prefix in prefixes:
        fsync_dir(dest.backend.path(f"blobs/{prefix}"))
    if prefixes:
        fsync_dir(dest.backend.path("blobs"))


def _commit(dest: Store, name: str, info: CheckpointInfo, **parts: Any) -> None:
    try:
        dest.commit(info, **parts)
    except CheckpointExistsError as err:  # another writer took the name while we copied
        raise _taken(name, dest) from err


def _import_files(source: Source, dest: Store, name: str, progress: Progress | None,
                  cache: HashCache | None) -> CheckpointInfo:
    dest.ensure_writable()
    meter = _Meter(source.total_bytes, progress)

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

        results: list[PutResult] = _parallel(dest, put, source.files)
        _sync_blob_dirs(dest, results)
        files = {f.relpath: {"blob": r.digest, "size": r.size, "executable": f.executable}
                 for f, r in zip(source.files, results, strict=True)}
        blobs = {r.digest: r.size for r in results}
        info = CheckpointInfo(id=name, name=name, kind="files", created=utc_now(),
                              logical_bytes=source.total_bytes,
                              new_bytes=sum({r.digest: r.size for r in results if r.new}
                                            .values()),
                              source=source.description)
        _commit(dest, name, info, objects={}, blobs=blobs, files=files,
                library_versions=library_versions())
    return info


def _vouched(dest: Store, source: Source) -> set[str]:
    """The blobs of the newest earlier copy of the same source into ``dest``. A committed
    manifest vouches for its blobs (they are written before it, and gc keeps every blob a
    manifest names), so an unchanged re-copy to a remote store needs neither a listing of
    every blob nor a request per file: one small manifest read instead."""
    if dest.backend.is_local:  # a stat per blob is as cheap as reading a manifest
        return set()
    prior = [i for i in dest.list() if i.source == source.description and i.kind == "files"]
    if not prior:
        return set()
    try:
        return set(dest.manifest(prior[-1].id)["blobs"])
    except (CkptError, OSError):
        return set()


class _Passes:
    """Opens a large file for each pass ``put_file`` makes over it (hash, then write) and
    fails a pass whose bytes differ from the first one's, so a file that changes between
    the passes can never be stored under the first pass's hash. Reports progress as it
    reads (half the bytes per pass, for the two passes)."""

    def __init__(self, opener: Callable[[], BinaryIO], size: int, where: str,
                 meter: _Meter) -> None:
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
        self.hasher = blake3.blake3()
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
            self.passes.finished(str(self.hasher.hexdigest()), self.count)
        return bytes(data)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(_CHUNK):
            chunks.append(chunk)
        self.read(_CHUNK)  # reach EOF: the check runs
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
            check_not_lfs_pointer(head, where=f.relpath)
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
    blobs: dict[str, int] = {d: int(s) for d, s in doc["blobs"].items()}
    where = f"checkpoint {info.id}"
    new_bytes = 0
    dest.ensure_writable()
    # held until the manifest lands: gc must not take the blobs in between
    with dest.lock(), dest.blobs.batch(len(blobs)):
        missing = sorted(set(blobs) - dest.blobs.existing(set(blobs)))
        if missing and dest.url == src.url:
            raise IntegrityError(f"{where}: {len(missing)} of its blobs are missing from "
                                 f"{src.url} (e.g. {missing[0][:16]}); it cannot be copied "
                                 "(`ckpt verify` lists them)")
        if missing:
            meter = _Meter(sum(blobs[d] for d in missing), progress)
            results = _parallel(dest, lambda d: _copy_blob(src, dest, d, blobs[d], where, meter),
                                missing)
            _sync_blob_dirs(dest, results)
            new_bytes = sum(r.size for r in results if r.new)
        # The copy keeps its source's creation time: it holds that moment's training state,
        # so it must not become `latest` ahead of newer training checkpoints.
        named = CheckpointInfo.from_json({**info.to_json(), "id": name, "name": name,
                                          "parent": info.id, "new_bytes": new_bytes,
                                          "source": f"{src.url}#{info.id}",
                                          "committed": True})
        _commit(dest, name, named, objects=doc["objects"], blobs=blobs, files=doc.get("files"),
                library_versions=doc.get("library_versions"))
    return named


def _copy_blob(src: Store, dest: Store, digest: str, size: int, where: str,
               meter: _Meter) -> PutResult:
    """Copy one blob, verified; large ones stream through a temp file, never into memory."""
    if size <= INLINE_LIMIT:
        result = dest.blobs.copy_from(src.blobs, digest, size, where=where)
        meter.add(size)
        return result
    rel = blob_path(digest)
    if dest.blobs.has(digest):
        meter.add(size)
        return PutResult(digest, size, new=False)
    with tempfile.TemporaryFile(prefix="ckpt-blob-") as spool:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        count = 0
        try:
            with src.backend.open_read(rel) as f:
                while chunk := f.read(_CHUNK):
                    hasher.update(chunk)
                    spool.write(chunk)
                    count += len(chunk)
                    meter.add(len(chunk))
        except FileNotFoundError as err:
            raise IntegrityError(f"{where}: blob {digest[:16]} is missing from {src.url}"
                                 ) from err
        if count != size or hasher.hexdigest() != digest:
            raise IntegrityError(f"{where}: blob {digest[:16]} in {src.url} is corrupt (its "
                                 "bytes do not match its BLAKE3 hash); nothing was committed")
        spool.seek(0)
        dest.backend.write_stream(rel, spool)
    return PutResult(digest, size, new=True)


# -- materialize ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Materialized:
    """What :func:`materialize_report` did."""

    path: Path
    checkpoint: str
    files: int
    nbytes: int
    reused: bool = False  # the folder already held this checkpoint and every file verified
    rewritten: bool = False  # it held this checkpoint but no longer verified

    def __str__(self) -> str:
        if self.reused:
            return (f"{self.path} already holds {self.checkpoint} ({self.files} files, "
                    f"{format_bytes(self.nbytes)}; every file verifies): nothing written")
        verb = "rewrote" if self.rewritten else "wrote"
        note = " (the folder no longer verified)" if self.rewritten else ""
        return (f"{verb} {self.checkpoint} to {self.path}{note}: {self.files} files, "
                f"{format_bytes(self.nbytes)}, read-only")


def materialize(ref: str, directory: str | os.PathLike[str], *,
                store: str | Store | None = None, progress: Progress | None = None) -> Path:
    """Write a checkpoint's files into ``directory`` (read-only files) and return it.

    A files checkpoint gives back its files; a training state gives ``<object>.safetensors``
    per object with tensors plus ``manifest.json``. Materializing again into a folder that
    still verifies reuses it; one of the same checkpoint that no longer verifies is written
    again; a folder holding anything else is refused.
    """
    return materialize_report(ref, directory, store=store, progress=progress).path


def materialize_report(ref: str, directory: str | os.PathLike[str], *,
                       store: str | Store | None = None, progress: Progress | None = None,
                       owned: bool = False) -> Materialized:
    """:func:`materialize`, saying what it did. ``owned``: the folder is ours alone (the
    ``use`` cache), so anything in it that does not verify is cleared away."""
    s = _open_store(store)
    info = resolve_ref(s, ref)
    doc = s.manifest(info.id)
    stamp = _stamp(doc)
    out = Path(directory).expanduser().absolute()
    state, marker = _folder_state(out, info.id, stamp)
    if state == "reusable":
        return _report(out, info.id, marker, reused=True)
    if state == "foreign" and not owned:
        raise CkptError(f"cannot materialize {info.id} into {out}: {_foreign(out, info.id, marker)}"
                        "; choose an empty or new folder (nothing there is overwritten)")
    if state == "missing":
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}{_STAGING}{_writer()}"
    else:
        staging = out / f"{_STAGING}{_writer()}"
    try:
        staging.mkdir()
        written = _write(s, doc, staging, progress)
        new_marker = {"checkpoint": info.id, "store": s.url, "manifest": stamp,
                      "files": written}
        (staging / MARKER).write_text(json.dumps(new_marker, indent=1))
        if state == "missing":
            try:
                os.rename(staging, out)
            except OSError as err:  # another process materialized it at the same moment
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if _folder_state(out, info.id, stamp)[0] == "reusable":
                    return _report(out, info.id, new_marker, reused=True)
                raise CkptError(f"cannot materialize {info.id} into {out}: another process "
                                "wrote that folder meanwhile; choose another folder") from err
        else:
            _clear(out, marker if state == "ours" else None, everything=state == "foreign")
            _move_in(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _report(out, info.id, new_marker, rewritten=state in ("ours", "foreign"))


def _report(out: Path, ckpt_id: str, marker: dict[str, Any] | None, *, reused: bool = False,
            rewritten: bool = False) -> Materialized:
    files = (marker or {}).get("files", {})
    total = sum(_size(out / rel) for rel in files)
    return Materialized(out, ckpt_id, len(files), total, reused=reused, rewritten=rewritten)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _writer() -> str:
    """``<host>-<pid>-<random>``: :func:`writer_alive` tells whether it is still running."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _stamp(doc: dict[str, Any]) -> str:
    """Identifies a checkpoint's content: equal names in two stores may differ."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _write(s: Store, doc: dict[str, Any], out: Path, progress: Progress | None,
           ) -> dict[str, str]:
    return (_write_files(s, doc, out, progress) if doc.get("files")
            else _write_state(s, doc, out))


def _write_files(s: Store, doc: dict[str, Any], out: Path,
                 progress: Progress | None) -> dict[str, str]:
    files: dict[str, Any] = doc["files"]
    ckpt_id = doc["checkpoint"]["id"]
    meter = _Meter(sum(int(f["size"]) for f in files.values()), progress)
    jobs = [(safe_relpath(rel, where=f"checkpoint {ckpt_id}"), rel, entry)
            for rel, entry in files.items()]

    def write(job: tuple[str, str, dict[str, Any]]) -> None:
        safe, rel, entry = job
        size, digest = int(entry["size"]), entry["blob"]
        where = f"checkpoint {ckpt_id}: file {rel}"
        target = out / safe
        target.parent.mkdir(parents=True, exist_ok=True)
        if size > INLINE_LIMIT:
            _stream_blob(s, digest, size, target, where, meter)
        else:
            with open(target, "xb") as f:
                f.write(s.blobs.read(digest, size, where=where))
            meter.add(size)
        target.chmod(0o555 if entry.get("executable") else 0o444)

    _parallel(s, write, jobs)
    return {safe: entry["blob"] for safe, _rel, entry in jobs}


def _stream_blob(s: Store, digest: str, size: int, target: Path, where: str,
                 meter: _Meter) -> None:
    hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
    count = 0
    try:
        with s.backend.open_read(blob_path(digest)) as src, open(target, "xb") as f:
            while chunk := src.read(_CHUNK):
                hasher.update(chunk)
                f.write(chunk)
                count += len(chunk)
                meter.add(len(chunk))
    except FileNotFoundError as err:
        raise IntegrityError(f"{where}: blob {digest[:16]} is missing from the store") from err
    if count != size or hasher.hexdigest() != digest:
        raise IntegrityError(f"{where}: blob {digest[:16]} is corrupt (its bytes do not match "
                             "its BLAKE3 hash)")


def _write_state(s: Store, doc: dict[str, Any], out: Path) -> dict[str, str]:
    ckpt_id = doc["checkpoint"]["id"]
    written = {}
    for obj_name, obj in doc["objects"].items():
        tensors = obj.get("tensors", ())
        if not tensors:
            continue
        cache: dict[str, dict[str, Any]] = {}
        chosen = {}
        for t in tensors:
            if t["blob"] not in cache:
                buf = s.blobs.read(t["blob"], t["blob_size"],
                                   where=f"checkpoint {ckpt_id}: {obj_name}: tensor {t['path']}")
                cache[t["blob"]] = tensorfile.decode(buf)
            chosen[t["path"]] = cache[t["blob"]][t["key"]]
        rel = safe_relpath(f"{obj_name}.safetensors", where=f"checkpoint {ckpt_id}")
        data = b"".join(bytes(c) for c in tensorfile.encode_chunks(chosen))
        _write_readonly(out / rel, data)
        written[rel] = hash_chunks([data])
    manifest_bytes = json.dumps(doc, indent=1).encode()
    _write_readonly(out / "manifest.json", manifest_bytes)
    written["manifest.json"] = hash_chunks([manifest_bytes])
    return written


def _write_readonly(path: Path, data: bytes | bytearray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        f.write(data)
    path.chmod(0o444)


def _listing(out: Path) -> list[str]:
    """Every file below ``out`` (relative POSIX paths), our staging folders left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(out):
        here = Path(dirpath)
        if here == out:
            dirnames[:] = [d for d in dirnames if not d.startswith(_STAGING)]
        found += [(here / n).relative_to(out).as_posix() for n in filenames]
    return found


def _folder_state(out: Path, ckpt_id: str, stamp: str) -> tuple[str, dict[str, Any] | None]:
    """``missing``, ``empty``, ``reusable`` (holds this checkpoint, verified), ``ours``
    (holds only this checkpoint's files, but they no longer verify) or ``foreign``."""
    if not out.exists():
        return "missing", None
    if not out.is_dir():
        raise CkptError(f"cannot materialize {ckpt_id} into {out}: it is a file, not a folder")
    _remove_dead_staging(out)
    present = _listing(out)
    if not present:
        return "empty", None
    try:
        marker = json.loads((out / MARKER).read_text())
        files: dict[str, str] = dict(marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return "foreign", None
    if marker.get("checkpoint") != ckpt_id or not set(present) <= {*files, MARKER}:
        return "foreign", marker
    if marker.get("manifest") == stamp and set(present) == {*files, MARKER} \
            and all(_file_digest(out / rel) == digest for rel, digest in files.items()):
        return "reusable", marker
    return "ours", marker


def _foreign(out: Path, ckpt_id: str, marker: dict[str, Any] | None) -> str:
    if marker is None or marker.get("checkpoint") != ckpt_id:
        held = f" (it holds {marker['checkpoint']})" if marker and "checkpoint" in marker else ""
        return f"the folder is not empty and does not hold this checkpoint{held}"
    extra = sorted(set(_listing(out)) - {*marker.get("files", {}), MARKER})
    return f"the folder holds files that are not part of {ckpt_id} (e.g. {extra[0]!r})"


def _file_digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
        return str(hasher.hexdigest())
    except OSError:
        return None


def _remove_dead_staging(out: Path) -> None:
    with contextlib.suppress(OSError):
        for entry in os.listdir(out):
            if entry.startswith(_STAGING) and writer_alive(entry[len(_STAGING):]) is False:
                shutil.rmtree(out / entry, ignore_errors=True)


def _clear(out: Path, marker: dict[str, Any] | None, *, everything: bool) -> None:
    """Remove what an earlier materialize left (the marker first: a half-cleared folder is
    never taken for a complete one); ``everything`` clears a folder we own entirely."""
    with contextlib.suppress(FileNotFoundError):
        (out / MARKER).unlink()
    if everything:
        for entry in os.listdir(out):
            if entry.startswith(_STAGING):
                continue
            path = out / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return
    for rel in (marker or {}).get("files", {}):
        with contextlib.suppress(FileNotFoundError):
            (out / rel).unlink()


def _move_in(staging: Path, out: Path) -> None:
    """Move every staged file into ``out``, the marker last."""
    for rel in sorted(_listing(staging), key=lambda r: r == MARKER):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ckpt_notebook" / "materialized"


def use(ref: str, *, store: str | Store | None = None,
        progress: Progress | None = None) -> Path:
    """Materialize a checkpoint into the cache and point ``$CKPT_NOTEBOOK_CHECKPOINT_PATH``
    at it, so training code reads it like a mounted checkpoint."""
    s = _open_store(store)
    info = resolve_ref(s, ref)
    key = hashlib.sha256(s.url.encode()).hexdigest()[:12]
    path = materialize_report(info.id, cache_dir() / key / info.id, store=s, progress=progress,
                              owned=True).path
    os.environ[PATH_ENV] = str(path)
    return path


def verify_materialized(path: str | os.PathLike[str]) -> None:
    """Raise :class:`IntegrityError` unless ``path`` still holds what was materialized."""
    out = Path(path)
    try:
        marker = json.loads((out / MARKER).read_text())
        ckpt_id, stamp = marker["checkpoint"], marker["manifest"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise IntegrityError(f"{out} was not materialized by ckpt_notebook (no readable "
                             f"{MARKER})") from err
    if _folder_state(out, ckpt_id, stamp)[0] != "reusable":
        raise IntegrityError(f"{out} no longer matches checkpoint {ckpt_id}: a file was "
                             "changed, added or removed; materialize it again")
