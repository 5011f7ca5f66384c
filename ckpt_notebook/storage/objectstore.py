"""A store on an object store (S3, GCS, Azure, ``memory://``, any fsspec filesystem that is
not a local folder): every call a request, retried on transient failures.

An object store makes a PUT visible all at once, so the PUT is the commit; a no-replace
commit is a conditional PUT. There is no rename, no folder to fsync and no lock: the store
is locked with lock objects (:mod:`.locks`).
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, TypeVar

from ..errors import CheckpointExistsError, StoreError
from . import locks
from .backend import STREAM_CHUNK, Backend, describe_error

__all__ = ["ObjectStoreBackend"]

T = TypeVar("T")


class ObjectStoreBackend(Backend):
    """A store under a bucket (or any non-local fsspec filesystem)."""

    workers = 16
    stat_is_cheap = False
    reads_in_place = False
    renames_atomically = False

    @property
    def local_folder(self) -> None:
        return None

    def _fresh(self, rel: str) -> str:
        """The full path, with fsspec's listings cache for it dropped. Other processes change
        a store, so what exists and how large it is must come from the server, never from an
        old listing (s3fs consults its listings even in ``cat_file``: a manifest committed
        after our last listing would read as missing)."""
        path = self.path(rel)
        self.fs.invalidate_cache(path)
        return path

    def _write_call(self, what: str, rel: str, fn: Callable[..., T], *args: Any,
                    **kwargs: Any) -> T:
        """:meth:`call` for writes: a missing parent on an object store is a missing bucket
        (or container), which fsspec reports as a bare FileNotFoundError naming nothing."""
        try:
            return self.call(what, rel, fn, *args, **kwargs)
        except FileNotFoundError as err:
            raise StoreError(f"{what} {self.where(rel)} failed: {describe_error(err)}; check "
                             "the bucket's name, or create the bucket first") from err

    # -- reading -----------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return bool(self.call("checking", rel, lambda: self.fs.exists(self._fresh(rel))))

    def read_bytes(self, rel: str) -> bytes:
        return bytes(self.call("reading", rel, lambda: self.fs.cat_file(self._fresh(rel))))

    def readinto(self, rel: str, size: int) -> bytearray:
        return bytearray(self.read_bytes(rel))

    def open_read(self, rel: str) -> BinaryIO:
        return self.call("opening", rel, lambda: self.fs.open(self._fresh(rel), "rb"))

    def listdir(self, rel: str) -> list[str]:
        try:
            entries = self.call("listing", rel, self.fs.ls, self.path(rel), detail=False,
                                refresh=True)
        except FileNotFoundError:
            return []
        return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]

    def size(self, rel: str) -> int:
        return int(self.call("sizing", rel, lambda: self.fs.size(self._fresh(rel))))

    def mtime(self, rel: str) -> float:
        info = self.call("inspecting", rel, lambda: self.fs.info(self._fresh(rel)))
        value = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
        return value.timestamp() if hasattr(value, "timestamp") else float(value)

    def walk_files(self, rel: str) -> Iterator[str]:
        try:
            found = self.call("listing", rel, self.fs.find, self.path(rel))
        except FileNotFoundError:
            return
        for path in found:
            yield path[len(self.root) + 1:]

    def free_space(self) -> None:
        return None

    # -- writing -----------------------------------------------------------------------
    def write_atomic(self, rel: str, chunks: list[bytes | memoryview], *,
                     exclusive: bool = False, durable: bool = True,
                     sync_dir: bool = True) -> None:
        """The PUT is the commit. ``exclusive`` is a conditional PUT on S3 (``If-None-Match:
        *``), GCS (``ifGenerationMatch=0``) and Azure (adlfs's ``overwrite=False``); other
        object stores check, then PUT."""
        path = self.path(rel)
        data = (chunks[0] if len(chunks) == 1 and isinstance(chunks[0], bytes)
                else b"".join(chunks))  # one copy at most
        if not exclusive:
            self._write_call("writing", rel, self.fs.pipe_file, path, data)
            return
        try:
            params = inspect.signature(self.fs._pipe_file if hasattr(self.fs, "_pipe_file")
                                       else self.fs.pipe_file).parameters
            if "mode" in params:  # s3fs, gcsfs: If-None-Match: * / ifGenerationMatch=0
                self._write_call("writing", rel, self.fs.pipe_file, path, data, mode="create")
                return
            if "overwrite" in params:  # adlfs: If-None-Match: *
                self._write_call("writing", rel, self.fs.pipe_file, path, data,
                                 overwrite=False)
                return
            if self.exists(rel):
                raise FileExistsError(path)
            self._write_call("writing", rel, self.fs.pipe_file, path, data)
        except FileExistsError as err:
            # A PUT that landed but whose answer was lost is retried and then finds itself:
            # if the object holds exactly our bytes, the commit is ours.
            with contextlib.suppress(Exception):
                if self.read_bytes(rel) == data:
                    return
            raise CheckpointExistsError(f"{self.where(rel)} already exists") from err

    def write_stream(self, rel: str, source: BinaryIO, *, durable: bool = True) -> None:
        def upload() -> None:
            source.seek(0)
            f = self.fs.open(self.path(rel), "wb")
            try:
                shutil.copyfileobj(source, f, length=STREAM_CHUNK)
                f.close()
            except BaseException:
                _discard(f)
                raise

        self._write_call("uploading", rel, upload)

    def _remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.call("removing", rel, self.fs.rm_file, self.path(rel))

    def sync_dirs(self, rels: Iterable[str]) -> None:
        pass  # no folders: a PUT is durable once it returns

    # -- locking -----------------------------------------------------------------------
    def lock(self, *, exclusive: bool, timeout: float,
             busy: str) -> AbstractContextManager[None]:
        return locks.held(self, exclusive=exclusive, timeout=timeout, busy=busy)

    def remove_stale_locks(self, *, dry_run: bool = False) -> int:
        return locks.remove_stale(self, dry_run=dry_run)

    def abort_abandoned_uploads(self, under: str, *, dry_run: bool = False) -> int:
        return locks.abort_abandoned_uploads(self, under, dry_run=dry_run)


def _discard(f: Any) -> None:
    """Abandon a remote file being written, so that a failed upload never lands.

    fsspec's buffered files commit whatever they hold when closed, also from ``__exit__``
    after an error and from ``__del__``: that would store a partial or wrong blob under a
    content hash. ``discard()`` aborts the upload (S3: the multipart upload); marking the file
    closed keeps ``__del__`` from committing it anyway.
    """
    with contextlib.suppress(Exception):
        f.discard()
    with contextlib.suppress(Exception):
        f.closed = True
