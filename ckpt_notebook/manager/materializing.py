"""Named checkpoints as files: materialize one into a local folder, or ``use`` it from a cache.

    ckpt_notebook.materialize("resnet-v1", "/tmp/resnet-v1")

Materializing writes into a private staging folder first and moves the files into place with
the marker file (``.ckpt_notebook.json``) last, so a folder holding a marker is complete.
Materializing again reuses a folder whose files all still verify; a folder of the same
checkpoint that no longer verifies (a file edited or removed) is written again, and a folder
holding anything else is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CkptError, IntegrityError
from ..storage import Store, tensorfile
from ..storage.blobs import INLINE_LIMIT
from ..storage.hashing import hash_chunks, hash_stream
from ..storage.manifest import FileRecord, Manifest
from ..storage.store import writer_alive
from ..types import CheckpointInfo, Progress, format_bytes
from . import uses
from .reading import tensor_of
from .refs import resolve_ref
from .sources import MARKER, safe_relpath
from .transfers import Meter, open_store, parallel

__all__ = ["MARKER", "PATH_ENV", "Materialized", "cache_dir", "materialize",
           "materialize_report", "use", "verify_materialized"]

PATH_ENV = "CKPT_NOTEBOOK_CHECKPOINT_PATH"
_STAGING = ".ckpt-staging-"


# -- materialize ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Materialized:
    """What :func:`materialize_report` did."""

    path: Path
    checkpoint: str
    files: int
    nbytes: int
    reused: bool = False  # the folder already held this checkpoint and every file verified
    rewritten: bool = False  # it held this checkpoint but no longer verified

    def __str__(self) -> str:
        if self.reused:
            return (f"{self.path} already holds {self.checkpoint} ({self.files} files, "
                    f"{format_bytes(self.nbytes)}; every file verifies): nothing written")
        verb = "rewrote" if self.rewritten else "wrote"
        note = " (the folder no longer verified)" if self.rewritten else ""
        return (f"{verb} {self.checkpoint} to {self.path}{note}: {self.files} files, "
                f"{format_bytes(self.nbytes)}, read-only")


def materialize(ref: str, directory: str | os.PathLike[str], *,
                store: str | Store | None = None, progress: Progress | None = None) -> Path:
    """Write a checkpoint's files into ``directory`` (read-only files) and return it.

    A files checkpoint gives back its files; a training state gives ``<object>.safetensors``
    per object with tensors plus ``manifest.json``. Materializing again into a folder that
    still verifies reuses it; one of the same checkpoint that no longer verifies is written
    again; a folder holding anything else is refused.
    """
    return materialize_report(ref, directory, store=store, progress=progress).path


def materialize_report(ref: str, directory: str | os.PathLike[str], *,
                       store: str | Store | None = None, progress: Progress | None = None,
                       owned: bool = False) -> Materialized:
    """:func:`materialize`, saying what it did. ``owned``: the folder is ours alone (the
    ``use`` cache), so anything in it that does not verify is cleared away. The folder is
    recorded as a user of the checkpoint (:mod:`.uses`): deleting it then needs force."""
    s = open_store(store)
    info = resolve_ref(s, ref)
    report = _materialize(s, info, Path(directory).expanduser().absolute(), progress, owned)
    uses.record(s, info.id, report.path)
    return report


def _materialize(s: Store, info: CheckpointInfo, out: Path, progress: Progress | None,
                 owned: bool) -> Materialized:
    doc = s.manifest(info.id)
    stamp = _stamp(doc)
    state, marker = _folder_state(out, info.id, stamp)
    if state == "reusable":
        return _report(out, info.id, marker, reused=True)
    if state == "foreign" and not owned:
        raise CkptError(f"cannot materialize {info.id} into {out}: {_foreign(out, info.id, marker)}"
                        "; choose an empty or new folder (nothing there is overwritten)")
    if state == "missing":
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}{_STAGING}{_writer()}"
    else:
        staging = out / f"{_STAGING}{_writer()}"
    try:
        staging.mkdir()
        written = _write(s, doc, staging, progress)
        new_marker = {"checkpoint": info.id, "store": s.url, "manifest": stamp,
                      "files": written}
        (staging / MARKER).write_text(json.dumps(new_marker, indent=1))
        if state == "missing":
            try:
                os.rename(staging, out)
            except OSError as err:  # another process materialized it at the same moment
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if _folder_state(out, info.id, stamp)[0] == "reusable":
                    return _report(out, info.id, new_marker, reused=True)
                raise CkptError(f"cannot materialize {info.id} into {out}: another process "
                                "wrote that folder meanwhile; choose another folder") from err
        else:
            _clear(out, marker if state == "ours" else None, everything=state == "foreign")
            _move_in(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _report(out, info.id, new_marker, rewritten=state in ("ours", "foreign"))


def _report(out: Path, ckpt_id: str, marker: dict[str, Any] | None, *, reused: bool = False,
            rewritten: bool = False) -> Materialized:
    files = (marker or {}).get("files", {})
    total = sum(_size(out / rel) for rel in files)
    return Materialized(out, ckpt_id, len(files), total, reused=reused, rewritten=rewritten)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _writer() -> str:
    """``<host>-<pid>-<random>``: :func:`writer_alive` tells whether it is still running."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


def _stamp(doc: Manifest) -> str:
    """Identifies a checkpoint's content: equal names in two stores may differ."""
    return hashlib.sha256(json.dumps(doc.to_json(), sort_keys=True).encode()).hexdigest()


def _write(s: Store, doc: Manifest, out: Path, progress: Progress | None,
           ) -> dict[str, str]:
    return (_write_files(s, doc, out, progress) if doc.files
            else _write_state(s, doc, out))


def _write_files(s: Store, doc: Manifest, out: Path,
                 progress: Progress | None) -> dict[str, str]:
    files = doc.files or {}
    ckpt_id = doc.checkpoint.id
    meter = Meter(sum(f.size for f in files.values()), progress)
    jobs = [(safe_relpath(rel, where=f"checkpoint {ckpt_id}"), rel, entry)
            for rel, entry in files.items()]

    def write(job: tuple[str, str, FileRecord]) -> None:
        safe, rel, entry = job
        size, digest = entry.size, entry.blob
        where = f"checkpoint {ckpt_id}: file {rel}"
        target = out / safe
        target.parent.mkdir(parents=True, exist_ok=True)
        if size > INLINE_LIMIT:
            _stream_blob(s, digest, size, target, where, meter)
        else:
            with open(target, "xb") as f:
                f.write(s.blobs.read(digest, size, where=where))
            meter.add(size)
        target.chmod(0o555 if entry.executable else 0o444)

    parallel(s, write, jobs)
    return {safe: entry.blob for safe, _rel, entry in jobs}


def _stream_blob(s: Store, digest: str, size: int, target: Path, where: str,
                 meter: Meter) -> None:
    """A large file, verified as it streams; a bad blob is quarantined (the caller removes
    the staging folder that holds the partial file)."""
    with open(target, "xb") as f:
        s.blobs.stream_into(digest, size, f, where=where, progress=meter.add)


def _write_state(s: Store, doc: Manifest, out: Path) -> dict[str, str]:
    ckpt_id = doc.checkpoint.id
    written = {}
    for obj_name, obj in doc.objects.items():
        tensors = obj.tensors
        if not tensors:
            continue
        cache: dict[str, dict[str, Any]] = {}
        chosen = {}
        where = f"checkpoint {ckpt_id}: {obj_name}"
        for t in tensors:
            if t.blob not in cache:
                buf = s.blobs.read(t.blob, t.blob_size, where=f"{where}: tensor {t.path}")
                cache[t.blob] = tensorfile.decode(buf, where=f"{where}: tensor {t.path}")
            chosen[t.path] = tensor_of(cache[t.blob], t, where=where)
        rel = safe_relpath(f"{obj_name}.safetensors", where=f"checkpoint {ckpt_id}")
        data = b"".join(bytes(c) for c in tensorfile.encode_chunks(chosen))
        _write_readonly(out / rel, data)
        written[rel] = hash_chunks([data])
    manifest_bytes = json.dumps(doc.to_json(), indent=1).encode()
    _write_readonly(out / "manifest.json", manifest_bytes)
    written["manifest.json"] = hash_chunks([manifest_bytes])
    return written


def _write_readonly(path: Path, data: bytes | bytearray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        f.write(data)
    path.chmod(0o444)


def _listing(out: Path) -> list[str]:
    """Every file below ``out`` (relative POSIX paths), our staging folders left out."""
    found = []
    for dirpath, dirnames, filenames in os.walk(out):
        here = Path(dirpath)
        if here == out:
            dirnames[:] = [d for d in dirnames if not d.startswith(_STAGING)]
        found += [(here / n).relative_to(out).as_posix() for n in filenames]
    return found


def _folder_state(out: Path, ckpt_id: str, stamp: str) -> tuple[str, dict[str, Any] | None]:
    """``missing``, ``empty``, ``reusable`` (holds this checkpoint, verified), ``ours``
    (holds only this checkpoint's files, but they no longer verify) or ``foreign``."""
    if not out.exists():
        return "missing", None
    if not out.is_dir():
        raise CkptError(f"cannot materialize {ckpt_id} into {out}: it is a file, not a folder")
    _remove_dead_staging(out)
    present = _listing(out)
    if not present:
        return "empty", None
    try:
        marker = json.loads((out / MARKER).read_text())
        files: dict[str, str] = dict(marker["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return "foreign", None
    if marker.get("checkpoint") != ckpt_id or not set(present) <= {*files, MARKER}:
        return "foreign", marker
    if marker.get("manifest") == stamp and set(present) == {*files, MARKER} \
            and all(_file_digest(out / rel) == digest for rel, digest in files.items()):
        return "reusable", marker
    return "ours", marker


def _foreign(out: Path, ckpt_id: str, marker: dict[str, Any] | None) -> str:
    if marker is None or marker.get("checkpoint") != ckpt_id:
        held = f" (it holds {marker['checkpoint']})" if marker and "checkpoint" in marker else ""
        return f"the folder is not empty and does not hold this checkpoint{held}"
    extra = sorted(set(_listing(out)) - {*marker.get("files", {}), MARKER})
    return f"the folder holds files that are not part of {ckpt_id} (e.g. {extra[0]!r})"


def _file_digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hash_stream(f)[0]
    except OSError:
        return None


def _remove_dead_staging(out: Path) -> None:
    with contextlib.suppress(OSError):
        for entry in os.listdir(out):
            if entry.startswith(_STAGING) and writer_alive(entry[len(_STAGING):]) is False:
                shutil.rmtree(out / entry, ignore_errors=True)


def _clear(out: Path, marker: dict[str, Any] | None, *, everything: bool) -> None:
    """Remove what an earlier materialize left (the marker first: a half-cleared folder is
    never taken for a complete one); ``everything`` clears a folder we own entirely."""
    with contextlib.suppress(FileNotFoundError):
        (out / MARKER).unlink()
    if everything:
        for entry in os.listdir(out):
            if entry.startswith(_STAGING):
                continue
            path = out / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return
    for rel in (marker or {}).get("files", {}):
        with contextlib.suppress(FileNotFoundError):
            (out / rel).unlink()


def _move_in(staging: Path, out: Path) -> None:
    """Move every staged file into ``out``, the marker last."""
    for rel in sorted(_listing(staging), key=lambda r: r == MARKER):
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ckpt_notebook" / "materialized"


def use(ref: str, *, store: str | Store | None = None,
        progress: Progress | None = None) -> Path:
    """Materialize a checkpoint into the cache and point ``$CKPT_NOTEBOOK_CHECKPOINT_PATH``
    at it, so training code reads it like a mounted checkpoint."""
    s = open_store(store)
    info = resolve_ref(s, ref)
    key = hashlib.sha256(s.url.encode()).hexdigest()[:12]
    path = materialize_report(info.id, cache_dir() / key / info.id, store=s, progress=progress,
                              owned=True).path
    os.environ[PATH_ENV] = str(path)
    return path


def verify_materialized(path: str | os.PathLike[str]) -> None:
    """Raise :class:`IntegrityError` unless ``path`` still holds what was materialized."""
    out = Path(path)
    try:
        marker = json.loads((out / MARKER).read_text())
        ckpt_id, stamp = marker["checkpoint"], marker["manifest"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise IntegrityError(f"{out} was not materialized by ckpt_notebook (no readable "
                             f"{MARKER})") from err
    if _folder_state(out, ckpt_id, stamp)[0] != "reusable":
        raise IntegrityError(f"{out} no longer matches checkpoint {ckpt_id}: a file was "
                             "changed, added or removed; materialize it again")
