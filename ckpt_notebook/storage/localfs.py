"""A store in a folder on this machine: the OS's own calls, no retries.

A commit is a temp file under ``tmp/``, fsynced, then renamed over its name (``os.link``
when the name must not be taken: a link never replaces); the folder is fsynced so the
rename survives a crash. The store is locked with ``flock`` on ``.lock``, which the kernel
releases when its holder dies, however it dies.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import CheckpointExistsError, StoreBusyError, StoreError
from . import odirect
from .backend import STREAM_CHUNK, Backend, RetryPolicy

__all__ = ["LOCK_FILE", "LocalBackend", "fsync_dir"]

LOCK_FILE = ".lock"


class LocalBackend(Backend):
    """A store in a local folder (``root`` is its absolute path)."""

    workers = 8
    stat_is_cheap = True
    reads_in_place = True
    renames_atomically = True

    def __init__(self, fs: Any, root: str, url: str, *, retry: RetryPolicy | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        super().__init__(fs, root, url, retry=retry, storage_options=storage_options)
        if os.path.exists(root) and not os.path.isdir(root):
            raise StoreError(f"cannot open store {url!r}: it is a file, not a folder", url=url,
                             hint="pass a folder path or URL")

    @property
    def local_folder(self) -> str:
        return self.root

    # -- reading -----------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return Path(self.path(rel)).read_bytes()

    def readinto(self, rel: str, size: int) -> bytearray:
        buf = bytearray(size)
        with open(self.path(rel), "rb", buffering=0) as f:
            got = f.readinto(buf)
        if got != size:
            raise OSError(f"{rel}: expected {size} bytes, read {got}")
        return buf

    def open_read(self, rel: str) -> BinaryIO:
        return open(self.path(rel), "rb")

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(self.path(rel))
        except FileNotFoundError:
            return []

    def size(self, rel: str) -> int:
        return os.path.getsize(self.path(rel))

    def mtime(self, rel: str) -> float:
        return os.path.getmtime(self.path(rel))

    def walk_files(self, rel: str) -> Iterator[str]:
        for dirpath, _dirs, files in os.walk(self.path(rel)):
            for name in files:
                yield os.path.relpath(os.path.join(dirpath, name), self.root)

    def free_space(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free
        except OSError:
            return None

    # -- writing -----------------------------------------------------------------------
    def write_atomic(self, rel: str, chunks: list[bytes | memoryview], *,
                     exclusive: bool = False, durable: bool = True,
                     sync_dir: bool = True) -> None:
        final = self.path(rel)
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        tmp = self._tmp_path()
        try:
            size = sum(memoryview(c).nbytes for c in chunks)
            odirect.write(tmp, chunks, direct=size >= odirect.DIRECT_MIN, durable=durable)
            if exclusive:
                try:
                    os.link(tmp, final)
                except FileExistsError as err:
                    raise CheckpointExistsError(f"{self.where(rel)} already exists") from err
            else:
                os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if durable and sync_dir:
            fsync_dir(parent)

    def write_stream(self, rel: str, source: BinaryIO, *, durable: bool = True) -> None:
        final = self.path(rel)
        tmp = self._tmp_path()
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(source, f, length=STREAM_CHUNK)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _tmp_path(self) -> str:
        tmp = self.path(f"tmp/{self.writer_id}-{uuid.uuid4().hex[:12]}")
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        return tmp

    def _remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(rel))

    def sync_dirs(self, rels: Iterable[str]) -> None:
        for rel in rels:
            fsync_dir(self.path(rel))

    # -- locking -----------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, exclusive: bool, timeout: float, busy: str) -> Iterator[None]:
        import fcntl

        os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.path(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise StoreBusyError(busy, url=self.url) from err
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def remove_stale_locks(self, *, dry_run: bool = False) -> int:
        return 0  # the kernel drops a dead holder's flock

    def abort_abandoned_uploads(self, under: str, *, dry_run: bool = False) -> int:
        return 0  # a dead writer leaves temp files, which gc removes as such


def fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
