"""What a copy reads from: a folder, a file, an archive, a URL, ``hf://``, or a checkpoint.

Every source becomes a list of :class:`SourceFile` (a relative path, a size and a way to open
it), except a checkpoint REF, which is copied as a checkpoint. Archives are read member by
member, within limits against archive bombs (:mod:`.archives`); members with absolute paths,
``..`` or links leading outside are refused before anything is stored.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import socket
import sqlite3
import ssl
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

from ..errors import (
    CheckpointNotFoundError,
    CkptError,
    SourceError,
    SourceNotFoundError,
    StoreError,
    UnsafeFileError,
    UnsupportedSourceError,
)
from ..storage import Store
from ..types import CheckpointInfo
from .refs import resolve_ref

if TYPE_CHECKING:
    from .archives import ArchiveLimits

__all__ = ["MARKER", "HashCache", "ReadStream", "Source", "SourceFile", "expand_source",
           "lfs_advice", "resolve_source", "safe_relpath"]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2")
REMOTE_PROTOCOLS = ("s3", "gs", "gcs", "az", "abfs", "abfss", "adl", "http", "https", "hf",
                    "memory", "ftp", "ftps", "sftp")
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"
MARKER = ".ckpt_notebook.json"  # what materialize leaves in a folder it wrote


@dataclass
class SourceFile:
    """One file to copy: where it goes in the checkpoint, its size, how to read it."""

    relpath: str
    size: int
    open: Callable[[], BinaryIO]
    digest: str | None = None  # known content hash (from the hash cache), if any
    executable: bool = False
    local_path: str | None = None
    check_lfs: bool = False  # remote sources: refuse Git LFS pointer files
    lfs_advice: str = ""  # what to do about one (default: see lfs_advice)
    stat: os.stat_result | None = None  # local files: as listed, before any read


@dataclass
class Source:
    description: str
    files: list[SourceFile] = field(default_factory=list)
    checkpoint: CheckpointInfo | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)
    in_order: bool = False  # files must be read one at a time, in order (a compressed tar)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def close(self) -> None:
        for fn in self.cleanup:
            fn()


def safe_relpath(name: str, *, where: str) -> str:
    """A normalized relative POSIX path, or :class:`UnsafeFileError` for ``..``/absolute."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise UnsafeFileError(f"{where}: refusing {name!r}: absolute paths are not allowed")
    norm = posixpath.normpath(clean)
    if norm == ".." or norm.startswith("../") or norm in ("", "."):
        raise UnsafeFileError(f"{where}: refusing {name!r}: it leads outside the target")
    return norm


def resolve_source(src: str, store: Store, *, cache: HashCache | None = None,
                   skip: Path | None = None, limits: ArchiveLimits | None = None) -> Source:
    """Turn what the user named into files to copy (or a checkpoint to copy). ``skip``: a
    folder left out of a local folder's copy (the store itself, when it lies inside);
    ``limits``: what an archive may extract (see :mod:`.archives`)."""
    text = expand_source(os.fspath(src))
    protocol = text.split("://", 1)[0] if "://" in text else ""
    if protocol == "hf":
        return _remote_source(*_hf_fs(text), description=text, lfs=True, limits=limits)
    if protocol.startswith("git+"):
        from .gitsource import git_source

        return git_source(text, limits)
    if protocol in REMOTE_PROTOCOLS:
        from ..storage.options import inherited_options

        options = inherited_options(text, store.url, store.backend.storage_options)
        with unreachable(text):
            fs, path = _url_to_fs(text, options)
        return _remote_source(fs, path, description=text, lfs=protocol in ("http", "https"),
                              limits=limits)
    if protocol == "file" or os.path.exists(text):
        return _local_source(text.removeprefix("file://"), cache, skip, limits)
    try:
        return Source(description=text, checkpoint=resolve_ref(store, text))
    except CheckpointNotFoundError as err:
        unset = _unset_variable(text)
        raise SourceNotFoundError(
            f"nothing to copy at {text!r}: no such file or folder{unset}, and {err}",
            path=text, ref=text) from err


def expand_source(text: str) -> str:
    """``~``, ``~user``, ``$VAR`` and ``${VAR}`` in a local path, as a shell would expand
    them (the magic and the API get the text unexpanded, and so does the CLI when quoted).
    A URL, or a path that exists as written, is left as it is."""
    if "://" in text or os.path.exists(text):
        return text
    return os.path.expandvars(os.path.expanduser(text))


def _unset_variable(text: str) -> str:
    """' ($NAME is not set)' when ``text`` (already expanded) still holds an unset variable."""
    names = [n for n in re.findall(r"\$\{?(\w+)", text) if n not in os.environ]
    return f" (${names[0]} is not set)" if names else ""


# -- local ------------------------------------------------------------------------------------
def _local_source(path: str, cache: HashCache | None, skip: Path | None = None,
                  limits: ArchiveLimits | None = None) -> Source:
    root = Path(path).resolve()
    if root.is_file():
        if root.name.lower().endswith(ARCHIVE_SUFFIXES):
            from .archives import archive_source

            return archive_source(str(root), description=path, limits=limits)
        return Source(path, [_local_file(root, root.name, cache)])
    if not root.is_dir():
        raise UnsupportedSourceError(f"cannot copy {path!r}: it is neither a file nor a folder",
                                     path=path)
    files = list(_walk(path, root, cache, skip))
    if not files:
        raise SourceError(f"nothing to copy: {path!r} is an empty folder", path=path)
    return Source(path, files)


def _walk(path: str, root: Path, cache: HashCache | None,
          skip: Path | None) -> Iterator[SourceFile]:
    """Every regular file below ``root``; symlinks must stay inside, folders must not loop."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != ".ipynb_checkpoints"
                             and (skip is None or (here / d).resolve() != skip))
        for d in dirnames:
            if (here / d).is_symlink():
                _check_dir_link(path, root, here / d)
        for name in sorted(filenames):
            full = here / name
            rel = full.relative_to(root).as_posix()
            if rel == MARKER:  # the record of an earlier materialize, not content
                continue
            if full.is_symlink():
                _check_file_link(path, root, full)
            st = full.stat()
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeFileError(f"{path}: refusing {rel!r}: not a regular file "
                                      "(a pipe, socket or device); move it out of the folder")
            yield _local_file(full, rel, cache, st)


def _check_file_link(path: str, root: Path, link: Path) -> None:
    target = link.resolve()
    rel = link.relative_to(root).as_posix()
    if not target.is_relative_to(root):
        raise UnsafeFileError(f"{path}: refusing symlink {rel} -> {os.readlink(link)}: it "
                              "leads outside the folder")
    if not target.exists():
        raise SourceError(f"{path}: symlink {rel} -> {os.readlink(link)} is broken (its target "
                          "does not exist)", path=str(link), hint="remove or fix it")


def _check_dir_link(path: str, root: Path, link: Path) -> None:
    """A symlinked folder is copied as a folder if it stays inside and does not loop."""
    target = link.resolve()
    rel = link.relative_to(root).as_posix()
    if not target.is_relative_to(root):
        raise UnsafeFileError(f"{path}: refusing symlink {rel} -> {os.readlink(link)}: it "
                              "leads outside the folder")
    ancestors = [root, *(root / Path(*link.relative_to(root).parts[:i])
                         for i in range(1, len(link.relative_to(root).parts)))]
    if any(a.resolve() == target for a in ancestors):
        raise UnsafeFileError(f"{path}: refusing symlink {rel} -> {os.readlink(link)}: it "
                              "loops back to a folder that contains it")


def _local_file(full: Path, rel: str, cache: HashCache | None,
                st: os.stat_result | None = None) -> SourceFile:
    st = full.stat() if st is None else st
    digest = cache.get(full, st) if cache is not None else None
    return SourceFile(rel, st.st_size, lambda: open(full, "rb"), digest=digest,
                      executable=bool(st.st_mode & stat.S_IXUSR), local_path=str(full),
                      stat=st)


class HashCache:
    """Content hashes of local files by (path, size, mtime, inode), like git's index: copying
    an unchanged folder again reads none of its files.

    A hash is remembered only when the file did not change while it was read and its mtime
    is older than the filesystem's timestamp granularity (git's "racily clean" rule), so a
    later change can never hide behind an unchanged mtime.
    """

    RACY_NS = 2_000_000_000  # coarse filesystems (FAT, some network mounts) tick every 2 s

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
            path = os.path.join(base, "ckpt_notebook", "hashes.sqlite3")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, int, int, str]] = []
        with self._lock, self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, "
                             "size INT, mtime_ns INT, inode INT, digest TEXT)")

    def get(self, path: Path, st: os.stat_result) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT size, mtime_ns, inode, digest FROM hashes "
                                   "WHERE path = ?", (str(path),)).fetchone()
        if row and tuple(row[:3]) == (st.st_size, st.st_mtime_ns, st.st_ino):
            return str(row[3])
        return None

    def put(self, path: str, digest: str, before: os.stat_result | None = None) -> bool:
        """Remember ``digest`` for ``path`` if it is still as ``before`` (its stat when it
        was listed, before it was read); returns whether it will be remembered. Writes are
        batched: :meth:`flush` (or :meth:`close`) stores them in one transaction."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if before is not None and key != (before.st_size, before.st_mtime_ns, before.st_ino):
            return False  # it changed while it was read
        if time.time_ns() - st.st_mtime_ns < self.RACY_NS:
            return False  # a change within the same timestamp tick would go unnoticed
        with self._lock:
            self._pending.append((path, *key, digest))
        return True

    def flush(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
            if rows:
                with self._db:
                    self._db.executemany("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)",
                                         rows)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._lock:
                self._db.close()


# -- remote -----------------------------------------------------------------------------------
def _hf_fs(url: str) -> tuple[Any, str]:
    """``hf://owner/repo[/subpath][@revision]`` -> (HfFileSystem, its path)."""
    from urllib.parse import quote

    from huggingface_hub import HfFileSystem

    from .hub import parse_hf_url  # both revision spellings, one parser

    repo_id, revision, repo_type, sub = parse_hf_url(url)
    repo = {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "") + repo_id
    path = repo + (f"@{quote(revision, safe='')}" if revision else "") + (f"/{sub}" if sub else "")
    return HfFileSystem(), path


def _url_to_fs(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """fsspec's filesystem for ``url``; ``ftp://`` and ``ftps://`` (FTP over explicit TLS,
    the server's certificate verified) open a connection per file read (see :mod:`.ftp`)."""
    import fsspec

    if url.startswith(("ftp://", "ftps://")):
        from .ftp import ftp_fs

        return ftp_fs(url, options)
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path


@contextlib.contextmanager
def unreachable(url: str) -> Iterator[None]:
    """Say 'cannot connect' when the host cannot be reached: fsspec's HTTP answers an
    unreachable host with FileNotFoundError (the connection error is in its ``__cause__``),
    which would read 'not found'."""
    try:
        yield
    except CkptError:
        raise
    except Exception as err:
        reason = _connection_failure(err)
        if reason is None:
            raise
        host = urlsplit(url).netloc.rpartition("@")[2] or url
        raise StoreError(f"cannot connect to {host} ({reason}) to read {url!r}", url=url,
                         hint="check the address and that the server is running") from err


def _connection_failure(err: BaseException | None) -> str | None:
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, ssl.SSLError):
            return None  # a TLS failure is not a connection failure: it says its own words
        if isinstance(err, (ConnectionError, socket.gaierror)) or \
                type(err).__name__.startswith("ClientConnector"):  # aiohttp's connect errors
            return str(getattr(err, "strerror", None) or err or type(err).__name__)
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _remote_source(fs: Any, path: str, *, description: str, lfs: bool,
                   limits: ArchiveLimits | None = None) -> Source:
    with unreachable(description):
        return _remote_files(fs, path, description=description, lfs=lfs, limits=limits)


def _remote_files(fs: Any, path: str, *, description: str, lfs: bool,
                  limits: ArchiveLimits | None) -> Source:
    try:
        is_dir = fs.isdir(path)
    except Exception as err:
        if _connection_failure(err) is not None:
            raise
        is_dir = False
    advice = lfs_advice(description)
    if not is_dir:
        if path.lower().endswith(ARCHIVE_SUFFIXES):
            from .archives import archive_source

            local, cleanup = _download(fs, path)
            try:
                source = archive_source(local, description=description, limits=limits)
            except BaseException:
                cleanup()
                raise
            source.cleanup.append(cleanup)
            return source
        try:
            size = _size(fs, path, fs.info(path).get("size"))
        except FileNotFoundError as err:
            if _connection_failure(err) is not None:
                raise
            raise SourceNotFoundError(f"nothing to copy at {description!r}: not found",
                                      url=description) from err
        name = posixpath.basename(path.rstrip("/")) or "file"
        return Source(description, [SourceFile(name, size, _opener(fs, path), check_lfs=lfs,
                                               lfs_advice=advice)], cleanup=_closer(fs))
    listed = []
    for full, info in sorted(fs.find(path, detail=True).items()):
        if info.get("type") == "directory":
            continue
        rel = safe_relpath(full[len(path.rstrip("/")) + 1:], where=description)
        if rel != MARKER:
            listed.append((rel, full, info.get("size")))
    if not listed:
        raise SourceError(f"nothing to copy: {description!r} holds no files", url=description)
    sizes = _sizes(fs, [(full, size) for _, full, size in listed])
    files = [SourceFile(rel, size, _opener(fs, full), check_lfs=lfs, lfs_advice=advice)
             for (rel, full, _), size in zip(listed, sizes, strict=True)]
    check_layout(files, where=description)
    return Source(description, files, cleanup=_closer(fs))


def _size(fs: Any, path: str, listed: Any) -> int:
    """A file's size: as listed, else as the server tells it (an HTTP folder's HTML listing
    has no sizes; a HEAD, or the start of a GET, gives its Content-Length)."""
    if listed is not None:
        return int(listed)
    size = fs.info(path).get("size")
    if size is None:
        raise UnsupportedSourceError(f"cannot copy {path!r}: the server does not tell its size "
                                     "(no Content-Length)", path=path,
                                     hint="download it first and copy the local file")
    return int(size)


def _sizes(fs: Any, items: list[tuple[str, Any]]) -> list[int]:
    """The sizes of many files, asking the server (in parallel) only for those not listed."""
    if all(size is not None for _, size in items):
        return [int(size) for _, size in items]
    from ..storage.blobs import parallel_map

    return parallel_map(lambda item: _size(fs, *item), items, 8, name="ckpt-size")


def _opener(fs: Any, path: str) -> Callable[[], BinaryIO]:
    opener = getattr(fs, "open_for_reading", None)  # one connection per open file (FTP)
    if opener is not None:
        return lambda: opener(path)
    return lambda: fs.open(path, "rb")


def _closer(fs: Any) -> list[Callable[[], None]]:
    close = getattr(fs, "close_connections", None)
    return [close] if close is not None else []


def _download(fs: Any, path: str) -> tuple[str, Callable[[], None]]:
    fd, local = tempfile.mkstemp(suffix="-" + posixpath.basename(path))
    with os.fdopen(fd, "wb") as out, fs.open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            out.write(chunk)
    return local, lambda: os.unlink(local)


def lfs_advice(source: str) -> str:
    """What to do when ``source`` serves a Git LFS pointer instead of a file."""
    if source.startswith("hf://"):
        return ("the Hub has no LFS content for it (an upload that did not finish?); check "
                "the file on the Hub, or ask the repository's owner to push it again")
    if source.startswith("git+"):
        return ("install Git LFS (`git lfs install`) so the clone fetches LFS content, then "
                "copy again")
    return ("fetch the content with `git lfs pull` and copy the local file, or, for a file "
            "on the Hugging Face Hub, use its hf://owner/repo/path URL")


def check_not_lfs_pointer(head: bytes, *, where: str, advice: str = "") -> None:
    if head.startswith(LFS_MAGIC):
        raise UnsupportedSourceError(f"{where} is a Git LFS pointer file, not the file's "
                                     "content: the server returned the pointer", path=where,
                                     hint=advice or lfs_advice(""))


# -- shared -----------------------------------------------------------------------------------
def check_layout(files: list[SourceFile], *, where: str) -> None:
    """Refuse a path that is both a file and a folder (``a`` and ``a/b``): no folder could
    hold both."""
    names = {f.relpath for f in files}
    for f in files:
        parent = posixpath.dirname(f.relpath)
        while parent:
            if parent in names:
                raise UnsupportedSourceError(f"{where}: {parent!r} is both a file and a folder "
                                             f"(it holds {f.relpath!r}); it cannot be copied "
                                             "as it is", path=parent)
            parent = posixpath.dirname(parent)


class ReadStream(io.RawIOBase):
    """A readable, seekable raw stream whose subclasses only define ``read`` and ``seek``."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readall(self) -> bytes:
        return bytes(self.read(-1) or b"")

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer)) or b""
        buffer[:len(data)] = data
        return len(data)
