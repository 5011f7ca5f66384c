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
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import CheckpointNotFoundError, CkptError, UnsafeFileError
from ..storage import Store
from ..types import CheckpointInfo
from .refs import resolve_ref

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
                   skip: Path | None = None) -> Source:
    """Turn what the user named into files to copy (or a checkpoint to copy). ``skip``: a
    folder left out of a local folder's copy (the store itself, when it lies inside)."""
    text = os.fspath(src)
    protocol = text.split("://", 1)[0] if "://" in text else ""
    if protocol == "hf":
        return _remote_source(*_hf_fs(text), description=text, lfs=True)
    if protocol in REMOTE_PROTOCOLS:
        import fsspec

        fs, path = fsspec.core.url_to_fs(text)
        return _remote_source(fs, path, description=text, lfs=protocol in ("http", "https"))
    if protocol == "file" or os.path.exists(text):
        return _local_source(text.removeprefix("file://"), cache, skip)
    try:
        return Source(description=text, checkpoint=resolve_ref(store, text))
    except CheckpointNotFoundError as err:
        raise CheckpointNotFoundError(
            f"nothing to copy at {text!r}: no such file or folder, and {err}") from err


# -- local ------------------------------------------------------------------------------------
def _local_source(path: str, cache: HashCache | None, skip: Path | None = None) -> Source:
    root = Path(path).resolve()
    if root.is_file():
        if root.name.lower().endswith(ARCHIVE_SUFFIXES):
            return _archive_source(str(root), description=path)
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


# -- archives ---------------------------------------------------------------------------------
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError)
_MAX_LINK_HOPS = 32


def _archive_source(path: str, *, description: str) -> Source:
    """Every member is checked (names, links, kinds) before any content is read."""
    try:
        if path.lower().endswith(".zip"):
            source = _zip_source(path, description)
        else:
            source = _tar_source(path, description)
    except UnsafeFileError:
        raise
    except _ARCHIVE_ERRORS as err:
        raise CkptError(f"cannot read the archive {description!r}: {err}") from err
    if not source.files:
        source.close()
        raise CkptError(f"nothing to copy: the archive {description!r} holds no files")
    try:
        check_layout(source.files, where=description)
    except CkptError:
        source.close()
        raise
    return source


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


def _dir_member(name: str, *, where: str) -> None:
    """Folder members only need to stay inside; ``.`` (``tar -C dir -cf x.tar .``) is fine."""
    if posixpath.normpath(name.replace("\\", "/")) != ".":
        safe_relpath(name, where=where)


def _zip_source(path: str, description: str) -> Source:
    zf = zipfile.ZipFile(path)  # closed by Source.close()
    try:
        members: dict[str, SourceFile] = {}
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeFileError(f"{description}: refusing symlink member "
                                      f"{info.filename!r}: archives are imported as plain "
                                      "files only")
            if info.is_dir():
                _dir_member(info.filename, where=description)
                continue
            rel = safe_relpath(info.filename, where=description)
            if info.flag_bits & 0x1:
                raise CkptError(f"{description}: member {info.filename!r} is encrypted; "
                                "decrypt the archive first")
            members[rel] = SourceFile(rel, info.file_size, _zip_opener(zf, info),
                                      executable=bool(mode & stat.S_IXUSR))
    except BaseException:
        zf.close()
        raise
    return Source(description, list(members.values()), cleanup=[zf.close])


def _zip_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
    return lambda: zf.open(info)  # type: ignore[return-value]


def _tar_source(path: str, description: str) -> Source:
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115 - uncompressed: members read in place
        plain = True
    except tarfile.ReadError:
        tf = tarfile.open(path, "r:*")  # noqa: SIM115
        plain = False
    with tf:
        chosen = _tar_plan(tf.getmembers(), description)
        if plain and not any(m.sparse for m, _ in chosen.values()):
            fd = os.open(path, os.O_RDONLY)
            files = [SourceFile(rel, real.size, _slice_opener(fd, real.offset_data, real.size),
                                executable=bool(real.mode & stat.S_IXUSR))
                     for rel, (_, real) in chosen.items()]
            return Source(description, files, cleanup=[lambda: os.close(fd)])
        return _spool_tar(tf, chosen, description)


def _tar_plan(members: list[tarfile.TarInfo], where: str,
              ) -> dict[str, tuple[tarfile.TarInfo, tarfile.TarInfo]]:
    """relpath -> (member, the regular-file member holding its bytes), links resolved.

    A later member of the same name replaces an earlier one, as ``tar -x`` does.
    """
    by_name: dict[str, tarfile.TarInfo] = {}
    for m in members:
        if m.isdir():
            _dir_member(m.name, where=where)
            continue
        rel = safe_relpath(m.name, where=where)
        if not (m.isfile() or m.issym() or m.islnk()):
            raise UnsafeFileError(f"{where}: refusing special member {m.name!r} (a device, "
                                  "pipe or other non-file)")
        by_name[rel] = m
    plan = {}
    for rel, m in by_name.items():
        real, current, hops = m, rel, 0
        while real.issym() or real.islnk():
            base = posixpath.dirname(current) if real.issym() else ""
            target = posixpath.normpath(posixpath.join(base, real.linkname.replace("\\", "/")))
            if real.linkname.startswith("/") or target == ".." or target.startswith("../"):
                raise UnsafeFileError(f"{where}: refusing link {m.name!r} -> "
                                      f"{real.linkname!r}: it leads outside the archive")
            hops += 1
            if target not in by_name or hops > _MAX_LINK_HOPS:
                raise UnsafeFileError(f"{where}: refusing link {m.name!r} -> "
                                      f"{real.linkname!r}: it does not lead to a file in the "
                                      "archive")
            real, current = by_name[target], target
        plan[rel] = (m, real)
    return plan


def _spool_tar(tf: tarfile.TarFile, chosen: dict[str, tuple[tarfile.TarInfo, tarfile.TarInfo]],
               description: str) -> Source:
    """Compressed tars are read once, in order, into one temp file (not into memory)."""
    spool = tempfile.TemporaryFile(prefix="ckpt-archive-")  # noqa: SIM115 - Source.close()
    try:
        offsets: dict[int, int] = {}
        needed = {id(real): real for _, real in chosen.values()}
        for m in sorted(needed.values(), key=lambda m: m.offset):
            f = tf.extractfile(m)
            if f is None:
                continue
            offsets[id(m)] = spool.tell()
            got = 0
            while chunk := f.read(8 << 20):
                spool.write(chunk)
                got += len(chunk)
            if got != m.size:
                raise CkptError(f"the archive {description!r} is truncated at {m.name!r}")
        spool.flush()
        fd = spool.fileno()
        files = [SourceFile(rel, real.size, _slice_opener(fd, offsets[id(real)], real.size),
                            executable=bool(real.mode & stat.S_IXUSR))
                 for rel, (_, real) in chosen.items()]
    except BaseException:
        spool.close()
        raise
    return Source(description, files, cleanup=[spool.close])


def _slice_opener(fd: int, offset: int, size: int) -> Callable[[], BinaryIO]:
    return lambda: _Slice(fd, offset, size)  # type: ignore[return-value]


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


class _Slice(ReadStream):
    """``size`` bytes at ``offset`` of an open file, read with ``pread``: any number of
    slices of one file can be read at once from several threads."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd, self._offset, self._size, self._pos = fd, offset, size, 0

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        left = self._size - self._pos
        want = left if n is None or n < 0 else min(n, left)
        parts = []
        while want > 0:
            data = os.pread(self._fd, want, self._offset + self._pos)
            if not data:
                raise EOFError("the archive ended before this member did (truncated?)")
            parts.append(data)
            self._pos += len(data)
            want -= len(data)
        return b"".join(parts)
