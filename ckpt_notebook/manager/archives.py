"""Archives as copy sources: zip and tar (plain, gzip, bzip2), read member by member.

Nothing is extracted next to the archive and nothing is spooled: each member becomes a
:class:`~.sources.SourceFile` whose reader decompresses it when the copy asks for its bytes.
Members with absolute paths, ``..`` or links leading outside are refused before anything is
stored, and so are archive bombs, by :class:`ArchiveLimits`:

- **size**: the bytes it would extract (declared sizes, summed as the archive is listed, so a
  tar.gz bomb is refused at the header of its huge member, before it is decompressed);
- **ratio**: extracted bytes per stored byte, for each zip member and sparse tar member and
  for the whole archive, once more than :data:`RATIO_GRACE` would be extracted. A zip member's
  stored size is taken from where the next member begins, not from its header (a member that
  claims to be stored 1:1, or overlaps others, is judged by the bytes it really has);
- **entries**: members listed, of any kind.

Declared sizes are not trusted while reading either: a member that yields more bytes than
its header declared is refused as it streams, so the bytes read never exceed the size
limit. A refusal is one :class:`UnsafeFileError` line naming the limit, the numbers and how
to raise it (``--archive-limit KEY=VALUE``, ``archive_limits={...}``).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from itertools import pairwise
from typing import IO, Any, BinaryIO

from ..errors import (
    CkptError,
    InvalidArgumentError,
    SourceError,
    UnsafeFileError,
    UnsupportedSourceError,
)
from ..types import format_bytes
from .sources import ReadStream, Source, SourceFile, check_layout, safe_relpath

__all__ = ["RATIO_GRACE", "ArchiveLimits", "archive_source"]

RATIO_GRACE = 16 << 20
"""Below this many extracted bytes the ratio is not checked: small files of zeros (a fresh
optimizer state, a mask) compress 1000:1 and are harmless."""

_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError)
_ARCHIVE_HINT = "it is damaged, cut short or not an archive; make or download it again"
_MAX_LINK_HOPS = 32
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an archive may extract. The defaults let through any archive of a checkpoint
    one would sensibly zip (64 GiB holds a 30B-parameter model in bf16); bigger ones, or
    ones with a great deal of zeros, are imported by raising a limit on purpose."""

    size: int = 64 << 30
    ratio: float = 100.0
    entries: int = 100_000

    @classmethod
    def of(cls, value: ArchiveLimits | Mapping[str, Any] | None) -> ArchiveLimits:
        """``None`` (the defaults), an ``ArchiveLimits``, or a mapping of some of ``size``
        (bytes, or ``"200G"``), ``ratio`` and ``entries`` to raise or lower."""
        if value is None or isinstance(value, ArchiveLimits):
            return value or cls()
        changes: dict[str, Any] = {k: parse_limit(k, v) for k, v in value.items()}
        return replace(cls(), **changes)


def parse_limit(key: str, value: Any) -> int | float:
    """One limit's value, or :class:`InvalidArgumentError` (a ValueError) naming it; sizes
    take K/M/G/T (powers of 1024)."""
    names = [f.name for f in fields(ArchiveLimits)]
    if key not in names:
        raise InvalidArgumentError(f"unknown archive limit {key!r}: the limits are "
                                   f"{', '.join(names)}")
    try:
        if key == "size":
            match = _SIZE_RE.fullmatch(str(value))
            if match is None:
                raise ValueError
            parsed: int | float = int(float(match[1]) * _UNITS[match[2].upper()])
        else:
            parsed = float(value) if key == "ratio" else int(value)
    except (TypeError, ValueError):
        parsed = 0
    if not parsed > 0 or parsed == float("inf"):
        hint = {"size": "bytes, or a size like 200G", "ratio": "a number like 1000",
                "entries": "a whole number"}[key]
        raise InvalidArgumentError(f"bad archive limit {key}={value!r}: expected {hint}, more "
                                   "than 0")
    return parsed


def archive_source(path: str, *, description: str,
                   limits: ArchiveLimits | None = None) -> Source:
    """Every member is checked (limits, names, links, kinds) before any content is read."""
    limits = limits or ArchiveLimits()
    try:
        if path.lower().endswith(".zip"):
            source = _zip_source(path, description, limits)
        else:
            source = _tar_source(path, description, limits)
    except (UnsafeFileError, SourceError):  # a SourceError is an OSError: keep its words
        raise
    except _ARCHIVE_ERRORS as err:
        raise SourceError(f"cannot read the archive {description!r}: {err}", path=description,
                          hint=_ARCHIVE_HINT) from err
    if not source.files:
        source.close()
        raise SourceError(f"nothing to copy: the archive {description!r} holds no files",
                          path=description)
    try:
        check_layout(source.files, where=description)
    except CkptError:
        source.close()
        raise
    return source


# -- limits ---------------------------------------------------------------------------------
class _Budget:
    """What one archive may extract, counted as it is listed."""

    def __init__(self, limits: ArchiveLimits, where: str, archive_bytes: int) -> None:
        self.limits, self.where, self.archive_bytes = limits, where, max(archive_bytes, 1)
        self.entries = self.total = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.entries:
            raise self._over("entries", f"it has more than {self.limits.entries:,} entries",
                             str(self.limits.entries * 10))

    def member(self, name: str, size: int, stored: int | None) -> None:
        """A member of ``size`` bytes once extracted, ``stored`` in the archive (``None``: not
        known, as in a compressed tar, where only the whole archive's ratio is known)."""
        self.total += size
        if self.total > self.limits.size:
            raise self._over("size", f"it would extract to {format_bytes(self.total)} (by "
                             f"member {name[:80]!r}), over the limit of "
                             f"{format_bytes(self.limits.size)}",
                             _size_text(1 << self.total.bit_length()))
        if stored is not None:
            self._ratio(f"member {name[:80]!r}", size, stored)
        self._ratio("it", self.total, self.archive_bytes)

    def _ratio(self, what: str, size: int, stored: int) -> None:
        if size > RATIO_GRACE and size > self.limits.ratio * max(stored, 1):
            ratio = size / max(stored, 1)
            raise self._over("ratio", f"{what} would expand {ratio:,.0f}:1 "
                             f"({format_bytes(size)} from {format_bytes(stored)}), over the "
                             f"ratio limit of {self.limits.ratio:g}:1", str(_round_up(ratio)))

    def _over(self, key: str, what: str, shown: str) -> UnsafeFileError:
        """The refusal: which limit, the numbers, and the value that would let it through."""
        return UnsafeFileError(  # the fix is mid-message ("...; nothing was copied")
            f"{self.where}: refusing the archive: {what} (an archive bomb?); if you trust it, "
            f"raise the limit: --archive-limit {key}={shown} (Python: "
            f"archive_limits={{'{key}': {shown if key != 'size' else repr(shown)}}}); nothing "
            "was copied")


def _round_up(n: float) -> int:
    """A round number above ``n``, to suggest as a limit: 50 -> 60, 1032.5 -> 2000."""
    step = 10 ** (len(str(int(n))) - 1)
    return int(n // step + 1) * step


def _size_text(n: int) -> str:
    """``16 << 20`` -> ``'16M'``: a size as ``--archive-limit size=`` takes it."""
    unit = next((u for u in "TGMK" if n % _UNITS[u] == 0), "")
    return f"{n // _UNITS[unit]}{unit}"


class _Counted(ReadStream):
    """A member's reader that refuses to yield more bytes than its header declared (the
    limits were checked against the declared sizes, so they hold for the bytes read)."""

    def __init__(self, raw: IO[bytes], size: int, name: str, where: str,
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.raw, self.size, self.name, self.where = raw, size, name, where
        self.on_close, self.pos = on_close, 0

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = self.raw.seek(offset, whence)
        return self.pos

    def read(self, n: int | None = -1) -> bytes:
        data = self.raw.read(-1 if n is None else n)
        self.pos += len(data)
        if self.pos > self.size:
            raise UnsafeFileError(f"{self.where}: refusing member {self.name!r}: it holds more "
                                  f"than the {self.size:,} bytes its header declares; nothing "
                                  "was committed (blobs already written go with `ckpt gc`)")
        return bytes(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self.raw.close()
            finally:
                if self.on_close is not None:
                    self.on_close()
        super().close()


def _counted(open_raw: Callable[[], Any], size: int, name: str,
             where: str) -> Callable[[], BinaryIO]:
    return lambda: _Counted(open_raw(), size, name, where)  # type: ignore[return-value]


# -- zip ------------------------------------------------------------------------------------
def _zip_source(path: str, description: str, limits: ArchiveLimits) -> Source:
    zf = zipfile.ZipFile(path)  # closed by Source.close()
    try:
        _zip_budget(zf, os.path.getsize(path), description, limits)
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
                raise UnsupportedSourceError(f"{description}: member {info.filename!r} is "
                                             "encrypted", path=description,
                                             hint="decrypt the archive first")
            members[rel] = SourceFile(rel, info.file_size,
                                      _counted(_zip_opener(zf, info), info.file_size, rel,
                                               description),
                                      executable=bool(mode & stat.S_IXUSR))
    except BaseException:
        zf.close()
        raise
    return Source(description, list(members.values()), cleanup=[zf.close])


def _zip_budget(zf: zipfile.ZipFile, archive_bytes: int, where: str,
                limits: ArchiveLimits) -> None:
    """Limits from the central directory, each member's stored size bounded by where the
    next member begins: no header is believed about how many bytes a member really has."""
    infos = zf.infolist()
    budget = _Budget(limits, where, archive_bytes)
    if len(infos) > limits.entries:
        raise budget._over("entries", f"it has {len(infos):,} entries, more than the limit "
                           f"of {limits.entries:,} entries", str(_round_up(len(infos))))
    starts = sorted({i.header_offset for i in infos} | {getattr(zf, "start_dir",
                                                                archive_bytes)})
    following = dict(pairwise(starts))
    for info in infos:
        if not info.is_dir():
            room = following.get(info.header_offset, archive_bytes) - info.header_offset
            budget.member(info.filename, info.file_size, min(info.compress_size, room))


def _zip_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
    return lambda: zf.open(info)  # type: ignore[return-value]


def _dir_member(name: str, *, where: str) -> None:
    """Folder members only need to stay inside; ``.`` (``tar -C dir -cf x.tar .``) is fine."""
    if posixpath.normpath(name.replace("\\", "/")) != ".":
        safe_relpath(name, where=where)


# -- tar ------------------------------------------------------------------------------------
def _tar_source(path: str, description: str, limits: ArchiveLimits) -> Source:
    """Plain tars are read in place (``pread`` of each member's slice, from any thread).
    Compressed tars, and sparse members, are read through :class:`_Cursors`: the members
    are listed once, then read in archive order from a decompressing stream, so nothing is
    spooled to a temp file and the archive is decompressed about twice in all (a member
    read twice, to hash it and then to write it, is read the second time by a second
    stream that trails the first)."""
    try:
        tf = tarfile.open(path, "r:")  # noqa: SIM115 - uncompressed: members read in place
        mode = "r:"
    except tarfile.ReadError:
        tf = tarfile.open(path, "r:*")  # noqa: SIM115
        mode = "r:*"
    with tf:
        chosen = _tar_plan(_list_tar(tf, os.path.getsize(path), description, limits),
                           description)
    cursors = _Cursors(path, compressed=mode != "r:")
    fd = os.open(path, os.O_RDONLY) if mode == "r:" else -1
    files = []
    for rel, real in sorted(chosen.items(), key=lambda item: item[1].offset_data):
        if fd >= 0 and not real.sparse:
            opener = _counted(_slice_opener(fd, real.offset_data, real.size), real.size, rel,
                              description)
        else:
            opener = cursors.opener(real, rel, description)
        files.append(SourceFile(rel, real.size, opener,
                                executable=bool(real.mode & stat.S_IXUSR)))
    cleanup = [cursors.close] + ([lambda: os.close(fd)] if fd >= 0 else [])
    return Source(description, files, cleanup=cleanup, in_order=mode != "r:")


def _list_tar(tf: tarfile.TarFile, archive_bytes: int, where: str,
              limits: ArchiveLimits) -> list[tarfile.TarInfo]:
    """The members, one header at a time: a member over a limit is refused at its header,
    before its data is decompressed to reach the next one."""
    budget = _Budget(limits, where, archive_bytes)
    members = []
    for m in tf:
        budget.entry()
        if m.isfile():
            sparse: Any = m.sparse  # [(offset, size), ...] of the bytes really stored
            stored = sum(size for _, size in sparse) if sparse is not None else None
            budget.member(m.name, m.size, stored)
        members.append(m)
    return members


def _tar_plan(members: list[tarfile.TarInfo], where: str) -> dict[str, tarfile.TarInfo]:
    """relpath -> the regular-file member holding its bytes, links resolved.

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
    return {rel: _resolve(rel, m, by_name, where) for rel, m in by_name.items()}


def _resolve(rel: str, m: tarfile.TarInfo, by_name: dict[str, tarfile.TarInfo],
             where: str) -> tarfile.TarInfo:
    real, current, hops = m, rel, 0
    while real.issym() or real.islnk():
        base = posixpath.dirname(current) if real.issym() else ""
        target = posixpath.normpath(posixpath.join(base, real.linkname.replace("\\", "/")))
        if real.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise UnsafeFileError(f"{where}: refusing link {m.name!r} -> "
                                  f"{real.linkname!r}: it leads outside the archive")
        hops += 1
        if target not in by_name or hops > _MAX_LINK_HOPS:
            raise UnsafeFileError(f"{where}: refusing link {m.name!r} -> {real.linkname!r}: "
                                  "it does not lead to a file in the archive")
        real, current = by_name[target], target
    return real


class _Cursors:
    """Decompressing readers of one tar, reused: a member is read by the idle reader that
    stands furthest along but not past it, which only has to decompress forward to it.

    Read in archive order, one reader serves every first read and a second one, trailing,
    every second read of the same member (``put_file`` hashes a large file, then writes
    it), so the archive is decompressed about twice and never from the start per member.
    A read out of order is still right, only slower (a reader starts from the beginning).
    """

    KEEP = 3  # idle readers kept; each holds a file handle and a decompressor's window

    def __init__(self, path: str, *, compressed: bool) -> None:
        self.path, self.compressed = path, compressed
        self._idle: list[tarfile.TarFile] = []
        self._lock = threading.Lock()
        self._closed = False

    def opener(self, member: tarfile.TarInfo, rel: str, where: str) -> Callable[[], BinaryIO]:
        def open_member() -> BinaryIO:
            tf = self._take(member.offset_data)
            try:
                raw = tf.extractfile(member)
            except BaseException:
                tf.close()
                raise
            assert raw is not None  # a regular file
            return _Counted(raw, member.size, rel, where,  # type: ignore[return-value]
                            on_close=lambda: self._give_back(tf))

        return open_member

    def _take(self, offset: int) -> tarfile.TarFile:
        with self._lock:
            behind = [tf for tf in self._idle if _position(tf) <= offset]
            if behind:
                best = max(behind, key=_position)
                self._idle.remove(best)
                return best
        return tarfile.open(self.path, "r:*" if self.compressed else "r:")

    def _give_back(self, tf: tarfile.TarFile) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(tf)
                if len(self._idle) <= self.KEEP:
                    return
                tf = min(self._idle, key=_position)
                self._idle.remove(tf)
        tf.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for tf in idle:
            tf.close()


def _position(tf: tarfile.TarFile) -> int:
    return tf.fileobj.tell() if tf.fileobj is not None else 0


def _slice_opener(fd: int, offset: int, size: int) -> Callable[[], BinaryIO]:
    return lambda: _Slice(fd, offset, size)  # type: ignore[return-value]


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
