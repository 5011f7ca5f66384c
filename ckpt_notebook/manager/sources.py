"""What a copy reads from: a folder, a file, an archive, a URL, ``hf://``, or a checkpoint.

Every source becomes a list of :class:`SourceFile` (a relative path, a size and a way to open
it), except a checkpoint REF, which is copied as a checkpoint. Archives are read member by
member without touching the disk outside a spool file; members with absolute paths, ``..``
or links leading outside are refused before anything is stored.
"""

from __future__ import annotations

import io
import os
import posixpath
import sqlite3
import stat
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from ..errors import CheckpointNotFoundError, CkptError, UnsafeFileError
from ..storage import Store
from ..types import CheckpointInfo
from .refs import resolve_ref

__all__ = ["HashCache", "Source", "SourceFile", "resolve_source", "safe_relpath"]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2")
REMOTE_PROTOCOLS = ("s3", "gs", "gcs", "az", "abfs", "abfss", "adl", "http", "https", "hf",
                    "memory", "ftp", "sftp")
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"
_SPOOL = 64 << 20


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


@dataclass
class Source:
    description: str
    files: list[SourceFile] = field(default_factory=list)
    checkpoint: CheckpointInfo | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

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


def resolve_source(src: str, store: Store, *, cache: HashCache | None = None) -> Source:
    """Turn what the user named into files to copy (or a checkpoint to copy)."""
    text = os.fspath(src)
    protocol = text.split("://", 1)[0] if "://" in text else ""
    if protocol == "hf":
        return _remote_source(*_hf_fs(text), description=text, lfs=True)
    if protocol in REMOTE_PROTOCOLS:
        import fsspec

        fs, path = fsspec.core.url_to_fs(text)
        return _remote_source(fs, path, description=text, lfs=protocol in ("http", "https"))
    if protocol == "file" or os.path.exists(text):
        return _local_source(text.removeprefix("file://"), cache)
    try:
        return Source(description=text, checkpoint=resolve_ref(store, text))
    except CheckpointNotFoundError as err:
        raise CheckpointNotFoundError(
            f"nothing to copy at {text!r}: no such file or folder, and {err}") from err


# -- local ------------------------------------------------------------------------------------
def _local_source(path: str, cache: HashCache | None) -> Source:
    root = Path(path).resolve()
    if root.is_file():
        if root.name.lower().endswith(ARCHIVE_SUFFIXES):
            return _archive_source(str(root), description=path)
        return Source(path, [_local_file(root, root.name, cache)])
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d != ".ipynb_checkpoints")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(root):
                    raise UnsafeFileError(f"{path}: refusing symlink {full.relative_to(root)} "
                                          f"-> {os.readlink(full)}: it leads outside the folder")
            rel = full.relative_to(root).as_posix()
            files.append(_local_file(full, rel, cache))
    if not files:
        raise CkptError(f"nothing to copy: {path!r} is an empty folder")
    return Source(path, files)


def _local_file(full: Path, rel: str, cache: HashCache | None) -> SourceFile:
    st = full.stat()
    digest = cache.get(full, st) if cache is not None else None
    return SourceFile(rel, st.st_size, lambda: open(full, "rb"), digest=digest,
                      executable=bool(st.st_mode & stat.S_IXUSR), local_path=str(full))


class HashCache:
    """Content hashes of local files by (path, size, mtime, inode), like git's index: copying
    an unchanged folder again reads none of its files."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        if path is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
            path = os.path.join(base, "ckpt_notebook", "hashes.sqlite3")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self._lock = threading.Lock()
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

    def put(self, path: str, digest: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?)",
                             (path, st.st_size, st.st_mtime_ns, st.st_ino, digest))

    def close(self) -> None:
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


def _remote_source(fs: Any, path: str, *, description: str, lfs: bool) -> Source:
    try:
        is_dir = fs.isdir(path)
    except Exception:
        is_dir = False
    if not is_dir:
        if path.lower().endswith(ARCHIVE_SUFFIXES):
            local, cleanup = _download(fs, path)
            source = _archive_source(local, description=description)
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
        files.append(SourceFile(rel, int(info.get("size") or 0), _opener(fs, full),
                                check_lfs=lfs))
    if not files:
        raise CkptError(f"nothing to copy: {description!r} holds no files")
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


# -- archives ---------------------------------------------------------------------------------
def _archive_source(path: str, *, description: str) -> Source:
    members = list(_zip_members(path) if path.lower().endswith(".zip") else _tar_members(path))
    if not members:
        raise CkptError(f"nothing to copy: the archive {description!r} holds no files")
    files = [SourceFile(rel, size, opener, executable=exe) for rel, size, opener, exe in members]
    return Source(description, files)


Member = tuple[str, int, Callable[[], BinaryIO], bool]


def _spooled(data_source: IO[bytes]) -> Callable[[], BinaryIO]:
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115 - kept for open()
    while chunk := data_source.read(8 << 20):
        spool.write(chunk)

    def reopen() -> BinaryIO:
        spool.seek(0)
        return _Unclosable(spool)  # type: ignore[return-value]

    return reopen


class _Unclosable(io.BufferedIOBase):
    """A view of a spool file whose close() leaves it open for the next reader."""

    def __init__(self, raw: Any) -> None:
        self.raw_file = raw

    def read(self, n: int | None = -1) -> bytes:
        return bytes(self.raw_file.read(-1 if n is None else n))

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.raw_file.seek(offset, whence))

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass


def _zip_members(path: str) -> Iterator[Member]:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        for info in infos:  # check every name before reading any content
            safe_relpath(info.filename, where=path)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeFileError(f"{path}: refusing symlink member {info.filename!r}")
        for info in infos:
            if info.is_dir():
                continue
            with zf.open(info) as f:
                opener = _spooled(f)
            yield (safe_relpath(info.filename, where=path), info.file_size, opener,
                   bool((info.external_attr >> 16) & stat.S_IXUSR))


def _tar_members(path: str) -> Iterator[Member]:
    with tarfile.open(path) as tf:
        members = tf.getmembers()
        by_name = {safe_relpath(m.name, where=path): m for m in members}
        for m in members:
            rel = safe_relpath(m.name, where=path)
            if m.issym() or m.islnk():
                base = posixpath.dirname(rel) if m.issym() else ""
                target = posixpath.normpath(posixpath.join(base, m.linkname))
                if m.linkname.startswith("/") or target == ".." or target.startswith("../") \
                        or by_name.get(target) is None or not by_name[target].isfile():
                    raise UnsafeFileError(f"{path}: refusing link {m.name!r} -> {m.linkname!r}:"
                                          " it leads outside the archive")
            elif not (m.isfile() or m.isdir()):
                raise UnsafeFileError(f"{path}: refusing special member {m.name!r}")
        for m in members:
            if m.isdir():
                continue
            rel = safe_relpath(m.name, where=path)
            real = m
            if m.issym() or m.islnk():
                base = posixpath.dirname(rel) if m.issym() else ""
                real = by_name[posixpath.normpath(posixpath.join(base, m.linkname))]
            f = tf.extractfile(real)
            if f is None:
                continue
            yield rel, real.size, _spooled(f), bool(real.mode & stat.S_IXUSR)
