"""Where bytes go: one fsspec filesystem plus an atomic-commit strategy chosen per backend.

Local stores commit by temp file + fsync + rename (``os.link`` when the name must not be
taken); object stores commit by the PUT itself, which is atomic there. There is no plugin
system beside fsspec's registry: any URL fsspec understands is a store, and a missing backend
fails with fsspec's own install hint.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import CheckpointExistsError, CkptError, StoreError

__all__ = ["Backend", "RetryPolicy", "is_transient", "open_backend"]

T = TypeVar("T")
_STREAM_CHUNK = 8 << 20

DEFAULT_STORE = "checkpoints"
STORE_ENV = "CKPT_NOTEBOOK_STORE"


def resolve_url(url: str | os.PathLike[str] | None) -> str:
    """The store URL to use: the argument, else ``$CKPT_NOTEBOOK_STORE``, else ``./checkpoints``."""
    if url is None or url == "":
        url = os.environ.get(STORE_ENV) or DEFAULT_STORE
    return os.fspath(url)


def open_backend(url: str | os.PathLike[str] | None, **storage_options: Any) -> Backend:
    """Open the filesystem behind ``url``; errors say which URL and how to fix it."""
    url = resolve_url(url)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    try:
        fs, root = fsspec.core.url_to_fs(url, **storage_options)
    except ImportError as err:
        raise StoreError(
            f"cannot open store {url!r}: the {protocol!r} backend is not installed ({err})"
        ) from err
    except ValueError as err:
        known = ", ".join(sorted(fsspec.available_protocols())[:12])
        raise StoreError(
            f"cannot open store {url!r}: {err}; use a local path or an fsspec URL ({known}, ...)"
        ) from err
    return Backend(fs, root.rstrip("/") or "/", url)


class Backend:
    """A filesystem rooted at the store's directory; paths below are relative to it.

    Remote calls are retried on transient failures (5xx, throttling, timeouts, resets) with
    exponential backoff and full jitter; after the last attempt the error names what failed.
    """

    def __init__(self, fs: Any, root: str, url: str, *,
                 retry: RetryPolicy | None = None) -> None:
        self.fs = fs
        self.root = root
        self.url = url
        self.is_local = isinstance(fs, LocalFileSystem)
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}"
        self.retry = retry or RetryPolicy()

    def __repr__(self) -> str:
        return f"Backend({self.url!r})"

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def call(self, what: str, rel: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a remote operation with retries; ``what`` and ``rel`` name it in errors."""
        return self.retry.run(fn, *args, describe=lambda: f"{what} {self.url}/{rel}", **kwargs)

    # -- reading -----------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if self.is_local:
            return os.path.exists(self.path(rel))
        return bool(self.call("checking", rel, self.fs.exists, self.path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        if self.is_local:
            return Path(self.path(rel)).read_bytes()
        return bytes(self.call("reading", rel, self.fs.cat_file, self.path(rel)))

    def readinto(self, rel: str, size: int) -> bytearray:
        """Read a whole file of known size into one fresh buffer (one copy, no joins)."""
        if self.is_local:
            buf = bytearray(size)
            with open(self.path(rel), "rb", buffering=0) as f:
                got = f.readinto(buf)
            if got != size:
                raise OSError(f"{rel}: expected {size} bytes, read {got}")
            return buf
        return bytearray(self.read_bytes(rel))

    def open_read(self, rel: str) -> BinaryIO:
        if self.is_local:
            return open(self.path(rel), "rb")
        return self.call("opening", rel, self.fs.open, self.path(rel), "rb")

    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) directly under ``rel``; empty when it does not exist."""
        if self.is_local:
            try:
                return os.listdir(self.path(rel))
            except FileNotFoundError:
                return []
        try:
            entries = self.call("listing", rel, self.fs.ls, self.path(rel), detail=False,
                                refresh=True)
        except FileNotFoundError:
            return []
        return [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]

    def size(self, rel: str) -> int:
        if self.is_local:
            return os.path.getsize(self.path(rel))
        return int(self.call("sizing", rel, self.fs.size, self.path(rel)))

    def mtime(self, rel: str) -> float:
        if self.is_local:
            return os.path.getmtime(self.path(rel))
        info = self.call("inspecting", rel, self.fs.info, self.path(rel))
        value = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
        return value.timestamp() if hasattr(value, "timestamp") else float(value)

    # -- writing -----------------------------------------------------------------------
    def write_atomic(self, rel: str, chunks: list[bytes | memoryview], *,
                     exclusive: bool = False, durable: bool = True,
                     sync_dir: bool = True) -> None:
        """Write ``rel`` so readers see all of it or nothing.

        ``exclusive`` fails with :class:`CheckpointExistsError` if ``rel`` exists, also when
        two writers race: locally the commit is ``os.link``, which never replaces; on S3 it
        is a conditional PUT (``If-None-Match: *``). Other object stores check, then PUT.
        """
        if self.is_local:
            self._write_local(rel, chunks, exclusive=exclusive, durable=durable,
                              sync_dir=sync_dir)
            return
        path = self.path(rel)
        data = b"".join(bytes(c) for c in chunks)
        if not exclusive:
            # Object stores make a PUT visible all at once: the PUT is the commit.
            self.call("writing", rel, self.fs.pipe_file, path, data)
            return
        try:
            if "mode" in inspect.signature(self.fs._pipe_file if hasattr(self.fs, "_pipe_file")
                                           else self.fs.pipe_file).parameters:
                self.call("writing", rel, self.fs.pipe_file, path, data, mode="create")
                return
            if self.exists(rel):
                raise FileExistsError(path)
            self.call("writing", rel, self.fs.pipe_file, path, data)
        except FileExistsError as err:
            # A PUT that landed but whose answer was lost is retried and then finds itself:
            # if the object holds exactly our bytes, the commit is ours.
            with contextlib.suppress(Exception):
                if self.read_bytes(rel) == data:
                    return
            raise CheckpointExistsError(f"{self.url}/{rel} already exists") from err

    def write_stream(self, rel: str, source: BinaryIO, *, durable: bool = True) -> None:
        """Copy a file object to ``rel`` without holding it in memory (temp + rename locally)."""
        if self.is_local:
            final = self.path(rel)
            tmp = self._tmp_path()
            os.makedirs(os.path.dirname(final), exist_ok=True)
            try:
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(source, f, length=_STREAM_CHUNK)
                    if durable:
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            return

        def upload() -> None:
            source.seek(0)
            with self.fs.open(self.path(rel), "wb") as f:
                shutil.copyfileobj(source, f, length=_STREAM_CHUNK)

        self.call("uploading", rel, upload)

    def _tmp_path(self) -> str:
        tmp = self.path(f"tmp/{self.writer_id}-{uuid.uuid4().hex[:12]}")
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        return tmp

    def _write_local(self, rel: str, chunks: list[bytes | memoryview], *,
                     exclusive: bool, durable: bool, sync_dir: bool) -> None:
        final = self.path(rel)
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        tmp = self._tmp_path()
        try:
            with open(tmp, "wb", buffering=0) as f:
                for chunk in chunks:
                    f.write(chunk)
                if durable:
                    os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, final)
                except FileExistsError as err:
                    raise CheckpointExistsError(f"{self.url}/{rel} already exists") from err
            else:
                os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if durable and sync_dir:
            fsync_dir(parent)

    def remove(self, rel: str) -> None:
        if self.is_local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path(rel))
            return
        with contextlib.suppress(FileNotFoundError):
            self.call("removing", rel, self.fs.rm_file, self.path(rel))

    def walk_files(self, rel: str) -> Iterator[str]:
        """Every file below ``rel``, as paths relative to the store root."""
        base = self.path(rel)
        if self.is_local:
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    yield os.path.relpath(os.path.join(dirpath, name), self.root)
            return
        try:
            found = self.call("listing", rel, self.fs.find, base)
        except FileNotFoundError:
            return
        for path in found:
            yield path[len(self.root) + 1:]


_TRANSIENT_WORDS = ("InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                    "Throttl", "reset", "timed out", "Timeout", "Disconnected", "Connection",
                    "IncompleteRead", "Payload", " 500", " 502", " 503", " 504")
_PERMANENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
              NotADirectoryError, CkptError, ValueError, TypeError, KeyError)


def is_transient(err: BaseException) -> bool:
    """Whether a failed remote call is worth retrying (5xx, throttling, timeouts, resets)."""
    if isinstance(err, _PERMANENT):
        return False
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    text = f"{type(err).__name__}: {err}"
    return isinstance(err, OSError) or any(word in text for word in _TRANSIENT_WORDS)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits up to ``base * 2**n`` seconds."""

    attempts: int = 5
    base: float = 0.1
    cap: float = 4.0

    def run(self, fn: Callable[..., T], *args: Any, describe: Callable[[], str],
            **kwargs: Any) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    raise
                if attempt == self.attempts:
                    raise StoreError(f"{describe()} failed after {attempt} attempts: "
                                     f"{type(err).__name__}: {err}") from err
                time.sleep(random.uniform(0, min(self.cap, self.base * 2 ** attempt)))
        raise AssertionError("unreachable")


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
