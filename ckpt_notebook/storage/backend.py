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
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import CheckpointExistsError, CkptError, StoreError
from . import directio
from .options import with_endpoint
from .trust import store_path

__all__ = ["Backend", "RetryPolicy", "describe_error", "is_transient", "open_backend"]

T = TypeVar("T")
_STREAM_CHUNK = 8 << 20

DEFAULT_STORE = "checkpoints"
STORE_ENV = "CKPT_NOTEBOOK_STORE"


def resolve_url(url: str | os.PathLike[str] | None) -> str:
    """The store URL to use: the argument, else ``$CKPT_NOTEBOOK_STORE``, else ``./checkpoints``."""
    if url is None or url == "":
        url = os.environ.get(STORE_ENV) or DEFAULT_STORE
    return os.fspath(url)


def open_backend(url: str | os.PathLike[str] | None, *,
                 retry: RetryPolicy | int | None = None, **storage_options: Any) -> Backend:
    """Open the filesystem behind ``url``; errors say which URL and how to fix it.

    ``storage_options`` go to fsspec (e.g. s3fs's ``key``, ``client_kwargs``); ``retry`` is
    ours: a :class:`RetryPolicy`, or just its number of attempts. Through
    ``Store(url, retry=RetryPolicy(attempts=2))`` or ``Checkpointer(url,
    storage_options={"retry": 2})`` it reaches here with the other options.
    """
    url = resolve_url(url)
    if isinstance(retry, int):
        retry = RetryPolicy(attempts=retry)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    storage_options = with_endpoint(url, storage_options)
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
    return Backend(fs, root.rstrip("/") or "/", url, retry=retry,
                   storage_options=storage_options)


class Backend:
    """A filesystem rooted at the store's directory; paths below are relative to it.

    Remote calls are retried on transient failures (5xx, throttling, timeouts, resets) with
    exponential backoff and full jitter; after the last attempt the error names what failed.
    """

    def __init__(self, fs: Any, root: str, url: str, *, retry: RetryPolicy | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.fs = fs
        self.storage_options = dict(storage_options or {})  # for other URLs of this user
        self.root = root
        self.url = url
        self.is_local = isinstance(fs, LocalFileSystem)
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}"
        self.retry = retry or RetryPolicy()
        self.removals = 0  # how many removes this process made (listings older are stale)
        self._removals_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Backend({self.url!r})"

    def path(self, rel: str) -> str:
        """The full path of ``rel``; refuses one that would lead outside the store (``rel``
        is often built from store data: ids, digests, names)."""
        return store_path(self.root, rel)

    def call(self, what: str, rel: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a remote operation with retries; ``what`` and ``rel`` name it in errors."""
        return self.retry.run(fn, *args, describe=lambda: f"{what} {self.where(rel)}", **kwargs)

    def where(self, rel: str) -> str:
        """The URL of ``rel``, for messages."""
        return f"{self.url.rstrip('/')}/{rel}" if rel else self.url

    def _write_call(self, what: str, rel: str, fn: Callable[..., T], *args: Any,
                    **kwargs: Any) -> T:
        """:meth:`call` for writes: a missing parent on an object store is a missing bucket
        (or container), which fsspec reports as a bare FileNotFoundError naming nothing."""
        try:
            return self.call(what, rel, fn, *args, **kwargs)
        except FileNotFoundError as err:
            raise StoreError(f"{what} {self.where(rel)} failed: {describe_error(err)}; check "
                             "the bucket's name, or create the bucket first") from err

    def _fresh(self, rel: str) -> str:
        """The full path, with fsspec's listings cache for it dropped. Other processes change
        a store, so what exists and how large it is must come from the server, never from an
        old listing (s3fs consults its listings even in ``cat_file``: a manifest committed
        after our last listing would read as missing)."""
        path = self.path(rel)
        self.fs.invalidate_cache(path)
        return path

    # -- reading -----------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if self.is_local:
            return os.path.exists(self.path(rel))
        return bool(self.call("checking", rel, lambda: self.fs.exists(self._fresh(rel))))

    def read_bytes(self, rel: str) -> bytes:
        if self.is_local:
            return Path(self.path(rel)).read_bytes()
        return bytes(self.call("reading", rel, lambda: self.fs.cat_file(self._fresh(rel))))

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
        return self.call("opening", rel, lambda: self.fs.open(self._fresh(rel), "rb"))

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
        return int(self.call("sizing", rel, lambda: self.fs.size(self._fresh(rel))))

    def mtime(self, rel: str) -> float:
        if self.is_local:
            return os.path.getmtime(self.path(rel))
        info = self.call("inspecting", rel, lambda: self.fs.info(self._fresh(rel)))
        value = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
        return value.timestamp() if hasattr(value, "timestamp") else float(value)

    # -- writing -----------------------------------------------------------------------
    def write_atomic(self, rel: str, chunks: list[bytes | memoryview], *,
                     exclusive: bool = False, durable: bool = True,
                     sync_dir: bool = True) -> None:
        """Write ``rel`` so readers see all of it or nothing.

        ``exclusive`` fails with :class:`CheckpointExistsError` if ``rel`` exists, also when
        two writers race: locally the commit is ``os.link``, which never replaces; on S3 it
        is a conditional PUT (``If-None-Match: *``), as on GCS (``ifGenerationMatch=0``) and
        Azure (adlfs's ``overwrite=False``). Other object stores check, then PUT.
        """
        if self.is_local:
            self._write_local(rel, chunks, exclusive=exclusive, durable=durable,
                              sync_dir=sync_dir)
            return
        path = self.path(rel)
        data = (chunks[0] if len(chunks) == 1 and isinstance(chunks[0], bytes)
                else b"".join(chunks))  # one copy at most
        if not exclusive:
            # Object stores make a PUT visible all at once: the PUT is the commit.
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
            f = self.fs.open(self.path(rel), "wb")
            try:
                shutil.copyfileobj(source, f, length=_STREAM_CHUNK)
                f.close()
            except BaseException:
                _discard(f)
                raise

        self._write_call("uploading", rel, upload)

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
            size = sum(memoryview(c).nbytes for c in chunks)
            directio.write(tmp, chunks, direct=size >= directio.DIRECT_MIN, durable=durable)
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

    def remove(self, rel: str) -> None:
        with self._removals_lock:
            self.removals += 1
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


def describe_error(err: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, shortened: for error messages that wrap ``err``."""
    text = " ".join(str(err).split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _foreign(err: BaseException) -> bool:
    """An error of a backend library that callers could not catch as a builtin (botocore's
    ``NoCredentialsError``, ...): it is translated to :class:`StoreError` at the boundary."""
    return not isinstance(err, (OSError, CkptError)) and type(err).__module__ != "builtins"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits up to ``base * 2**n`` seconds
    (at most ``cap``). ``attempts`` counts every try, the first included.

    It wraps each remote call, on top of the backend library's own retries (botocore retries
    5xx and connection errors itself); a test or an impatient caller can shorten it:
    ``Store("s3://bucket/ckpts", retry=RetryPolicy(attempts=2, base=0.01))``.
    """

    attempts: int = 5
    base: float = 0.1
    cap: float = 4.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy needs at least 1 attempt, not {self.attempts}")
        if self.base < 0 or self.cap < 0:
            raise ValueError("RetryPolicy base and cap must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return random.uniform(0, min(self.cap, self.base * 2 ** attempt))

    def run(self, fn: Callable[..., T], *args: Any, describe: Callable[[], str],
            **kwargs: Any) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                if not is_transient(err):
                    if _foreign(err):
                        raise StoreError(f"{describe()} failed: {describe_error(err)}") from err
                    raise
                if attempt == self.attempts:
                    tries = "1 attempt" if attempt == 1 else f"{attempt} attempts"
                    raise StoreError(f"{describe()} failed after {tries}: "
                                     f"{describe_error(err)}") from err
                time.sleep(self.delay(attempt))
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
