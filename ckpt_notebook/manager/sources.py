"""What a copy reads from: a folder, a file, an archive, a URL, ``hf://``, or a checkpoint.

Every source becomes a list of :class:`SourceFile` (a relative path, a size and a way to open
it), except a checkpoint REF, which is copied as a checkpoint. Archives are read member by
member, within limits against archive bombs (:mod:`.archives`); members with absolute paths,
``..`` or links leading outside are refused before anything is stored.
"""

from __future__ import annotations

import io
import os
import posixpath
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import CheckpointNotFoundError, CkptError, UnsafeFileError
from ..storage import Store
from ..types import CheckpointInfo
from .refs import resolve_ref

if TYPE_CHECKING:
    from .archives import ArchiveLimits

__all__ = ["MARKER", "HashCache", "ReadStream", "Source", "SourceFile", "resolve_source",
           "safe_relpath"]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2")
REMOTE_PROTOCOLS = ("s3", "gs", "gcs", "az", "abfs", "abfss", "adl", "http", "https", "hf",
                    "memory", "ftp", "sftp")
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
    text = os.fspath(src)
    protocol = text.split("://", 1)[0] if "://" in text else ""
    if protocol == "hf":
        return _remote_source(*_hf_fs(text), description=text, lfs=True, limits=limits)
    if protocol in REMOTE_PROTOCOLS:
        import fsspec

        fs, path = fsspec.core.url_to_fs(text)
        return _remote_source(fs, path, description=text, lfs=protocol in ("http", "https"),
                              limits=limits)
    if protocol == "file" or os.path.exists(text):
        return _local_source(text.removeprefix("file://"), cache, skip, limits)
    try:
        return Source(description=text, checkpoint=resolve_ref(store, text))
    except CheckpointNotFoundError as err:
        raise CheckpointNotFoundError(
            f"nothing to copy at {text!r}: no such file or folder, and {err}") from err


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
        raise CkptError(f"cannot copy {path!r}: it is neither a file nor a folder")
    files = list(_walk(path, root, cache, skip))
    if not files:
        raise CkptError(f"nothing to copy: {path!r} is an empty folder")
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
        raise CkptError(f"{path}: symlink {rel} -> {os.readlink(link)} is broken (its target "
                        "does not exist); remove or fix it")


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

    rest = url.removeprefix("hf://").strip("/")
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    parts = rest.split("/")
    n = 3 if parts[0] in ("datasets", "spaces", "models") else 2
    if len(parts) < n:
        raise ValueError(f"bad Hugging Face URL {url!r}: use hf://owner/repo[/subpath][@revision]")
    repo, sub = "/".join(parts[:n]), "/".join(parts[n:])
    path = repo + (f"@{quote(revision, safe='')}" if revision else "") + (f"/{sub}" if sub else "")
    return HfFileSystem(), path


def _remote_source(fs: Any, path: str, *, description: str, lfs: bool,
                   limits: ArchiveLimits | None = None) -> Source:
    try:
        is_dir = fs.isdir(path)
    except Exception:
        is_dir = False
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
            size = int(fs.size(path) or 0)
        except FileNotFoundError as err:
            raise CheckpointNotFoundError(f"nothing to copy at {description!r}: not found") from err
        name = posixpath.basename(path.rstrip("/")) or "file"
        return Source(description, [SourceFile(name, size, lambda: fs.open(path, "rb"),
                                               check_lfs=lfs)])
    files = []
    for full, info in sorted(fs.find(path, detail=True).items()):
        if info.get("type") == "directory":
            continue
        rel = safe_relpath(full[len(path.rstrip("/")) + 1:], where=description)
        if rel == MARKER:
            continue
        files.append(SourceFile(rel, int(info.get("size") or 0), _opener(fs, full),
                                check_lfs=lfs))
    if not files:
        raise CkptError(f"nothing to copy: {description!r} holds no files")
    check_layout(files, where=description)
    return Source(description, files)


def _opener(fs: Any, path: str) -> Callable[[], BinaryIO]:
    return lambda: fs.open(path, "rb")


def _download(fs: Any, path: str) -> tuple[str, Callable[[], None]]:
    fd, local = tempfile.mkstemp(suffix="-" + posixpath.basename(path))
    with os.fdopen(fd, "wb") as out, fs.open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            out.write(chunk)
    return local, lambda: os.unlink(local)


def check_not_lfs_pointer(head: bytes, *, where: str) -> None:
    if head.startswith(LFS_MAGIC):
        raise CkptError(f"{where} is a Git LFS pointer file, not the file's content: the "
                        "server returned the pointer; fetch it with `git lfs pull`, or use "
                        "the hf:// URL of the file")


# -- shared -----------------------------------------------------------------------------------
def check_layout(files: list[SourceFile], *, where: str) -> None:
    """Refuse a path that is both a file and a folder (``a`` and ``a/b``): no folder could
    hold both."""
    names = {f.relpath for f in files}
    for f in files:
        parent = posixpath.dirname(f.relpath)
        while parent:
            if parent in names:
                raise CkptError(f"{where}: {parent!r} is both a file and a folder "
                                f"(it holds {f.relpath!r}); it cannot be copied as it is")
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
