"""Where bytes go: the interface a store needs of its filesystem, and the one place that
picks the implementation.

A store runs on one of two strategies, chosen once when it opens (:func:`open_backend`), as
orbax picks an atomicity strategy per filesystem:

- :class:`~.localfs.LocalBackend`, a folder on this machine: a commit is temp file + fsync +
  rename (``os.link`` when the name must not be taken), folders are fsynced to make renames
  durable, the store is locked with ``flock``, files are read in place.
- :class:`~.objectstore.ObjectStoreBackend`, every other fsspec filesystem (S3, GCS, Azure,
  ``memory://``, ...): the PUT is the commit (a conditional PUT when the name must not be
  taken), the store is locked with lock objects (:mod:`.locks`), calls are retried.

The rest of the code speaks to :class:`Backend` and asks what a store can do
(:attr:`~Backend.reads_in_place`, :attr:`~Backend.stat_is_cheap`, ...), never which one it
has. There is no plugin system beside fsspec's registry: any URL fsspec understands is a
store, and a missing backend fails with fsspec's own install hint.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import CheckpointExistsError, CkptError, InvalidArgumentError, StoreError
from .options import with_endpoint
from .trust import store_path

__all__ = ["Backend", "RetryPolicy", "describe_error", "is_transient", "open_backend"]

T = TypeVar("T")

DEFAULT_STORE = "checkpoints"
STORE_ENV = "CKPT_NOTEBOOK_STORE"
STREAM_CHUNK = 8 << 20  # bytes copied at a time when a stream is written to a store


def resolve_url(url: str | os.PathLike[str] | None) -> str:
    """The store URL to use: the argument, else ``$CKPT_NOTEBOOK_STORE``, else ``./checkpoints``."""
    if url is None or url == "":
        url = os.environ.get(STORE_ENV) or DEFAULT_STORE
    return os.fspath(url)


def open_backend(url: str | os.PathLike[str] | None, *,
                 retry: RetryPolicy | int | None = None, **storage_options: Any) -> Backend:
    """Open the filesystem behind ``url`` with the backend class for it; errors say which URL
    and how to fix it.

    ``storage_options`` go to fsspec (e.g. s3fs's ``key``, ``client_kwargs``); ``retry`` is
    ours: a :class:`RetryPolicy`, or just its number of attempts. Through
    ``Store(url, retry=RetryPolicy(attempts=2))`` or ``Checkpointer(url,
    storage_options={"retry": 2})`` it reaches here with the other options.
    """
    from .localfs import LocalBackend  # the implementations import this module
    from .objectstore import ObjectStoreBackend

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
    cls = LocalBackend if isinstance(fs, LocalFileSystem) else ObjectStoreBackend
    return cls(fs, root.rstrip("/") or "/", url, retry=retry, storage_options=storage_options)


class Backend(ABC):
    """A filesystem rooted at the store's directory; paths below are relative to it.

    Calls made through :meth:`call` (every request to an object store) are retried on
    transient failures (5xx, throttling, timeouts, resets) with exponential backoff and full
    jitter; after the last attempt the error names what failed.
    """

    workers: ClassVar[int]
    """How many blob reads or writes are worth running at once."""
    stat_is_cheap: ClassVar[bool]
    """Whether checking a file is a system call, not a request: it then also gives the size,
    and one listing to answer many checks does not pay."""
    reads_in_place: ClassVar[bool]
    """Whether files open at :meth:`path` with the OS's own calls (read in place, no copy
    through a request); a failed read then points at the file, not at the network."""
    renames_atomically: ClassVar[bool]
    """Whether ``os.replace`` at :meth:`path` moves a file in one step (object stores have
    no rename: a move is a copy, then a delete)."""

    def __init__(self, fs: Any, root: str, url: str, *, retry: RetryPolicy | None = None,
                 storage_options: dict[str, Any] | None = None) -> None:
        self.fs = fs
        self.storage_options = dict(storage_options or {})  # for other URLs of this user
        self.root = root
        self.url = url
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}"
        self.retry = retry or RetryPolicy()
        self.removals = 0  # how many removes this process made (listings older are stale)
        self._removals_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

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

    @property
    @abstractmethod
    def local_folder(self) -> str | None:
        """The store's folder on this machine, which people and the OS's own tools (file
        modes, a file watcher, disk usage) can use; None for an object store."""

    # -- reading -----------------------------------------------------------------------
    @abstractmethod
    def exists(self, rel: str) -> bool: ...

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes: ...

    @abstractmethod
    def readinto(self, rel: str, size: int) -> bytearray:
        """Read a whole file of known size into one fresh buffer (one copy, no joins)."""

    @abstractmethod
    def open_read(self, rel: str) -> BinaryIO: ...

    @abstractmethod
    def listdir(self, rel: str) -> list[str]:
        """Names (not paths) directly under ``rel``; empty when it does not exist."""

    @abstractmethod
    def size(self, rel: str) -> int: ...

    @abstractmethod
    def mtime(self, rel: str) -> float: ...

    @abstractmethod
    def walk_files(self, rel: str) -> Iterator[str]:
        """Every file below ``rel``, as paths relative to the store root."""

    @abstractmethod
    def free_space(self) -> int | None:
        """Bytes free for the store; None when not known (object stores)."""

    # -- writing -----------------------------------------------------------------------
    @abstractmethod
    def write_atomic(self, rel: str, chunks: list[bytes | memoryview], *,
                     exclusive: bool = False, durable: bool = True,
                     sync_dir: bool = True) -> None:
        """Write ``rel`` so readers see all of it or nothing (the commit).

        ``exclusive`` (a no-replace commit) fails with :class:`CheckpointExistsError` if
        ``rel`` exists, also when two writers race. ``durable``: the bytes are on disk when
        it returns; ``sync_dir``: so is the new name (else :meth:`sync_dirs` does it later).
        """

    @abstractmethod
    def write_stream(self, rel: str, source: BinaryIO, *, durable: bool = True) -> None:
        """Copy a file object to ``rel`` without holding it in memory (atomically)."""

    def remove(self, rel: str) -> None:
        """Remove ``rel`` if it exists."""
        with self._removals_lock:
            self.removals += 1
        self._remove(rel)

    @abstractmethod
    def _remove(self, rel: str) -> None: ...

    @abstractmethod
    def sync_dirs(self, rels: Iterable[str]) -> None:
        """Make the names just written into the folders ``rels`` durable (a no-op where a
        write is durable once it returns)."""

    def claim(self, rel: str, mark: str, doc: bytes) -> bool:
        """Take the file ``rel`` for this process: of several takers at once exactly one
        gets True. The claim is creating ``mark`` (holding ``doc``, which differs per taker)
        with a no-replace commit; only then is ``rel`` removed, so at every moment one of
        the two exists and whoever asks sees the file waiting or taken, never neither.
        (A remove cannot be the claim: on object stores a delete succeeds whether or not
        the object was there.)"""
        try:
            self.write_atomic(mark, [doc], exclusive=True, durable=False)
        except CheckpointExistsError:
            return False  # another process claimed it first
        self.remove(rel)
        return True

    # -- locking -----------------------------------------------------------------------
    @abstractmethod
    def lock(self, *, exclusive: bool, timeout: float,
             busy: str) -> AbstractContextManager[None]:
        """Hold the store shared or exclusively; :class:`StoreBusyError` (saying ``busy``)
        when that is not possible within ``timeout`` seconds."""

    @abstractmethod
    def remove_stale_locks(self, *, dry_run: bool = False) -> int:
        """Remove the locks of holders that died; returns how many (would) go."""

    @abstractmethod
    def abort_abandoned_uploads(self, under: str, *, dry_run: bool = False) -> int:
        """Abort the incomplete uploads below ``under`` that dead writers left (call it
        holding the store exclusively); returns how many (would) go."""


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
            raise InvalidArgumentError(f"RetryPolicy needs at least 1 attempt, not "
                                       f"{self.attempts}")
        if self.base < 0 or self.cap < 0:
            raise InvalidArgumentError("RetryPolicy base and cap must not be negative")

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
