"""Named, immutable checkpoints: copy a folder, file, archive, URL or checkpoint into one,
and materialize one into a local folder.

    ckpt_notebook.copy("models/", "resnet-v1")                     # into the current store
    ckpt_notebook.copy("latest", "baseline", to="s3://bucket/ckpts")
    ckpt_notebook.materialize("resnet-v1", "/tmp/resnet-v1")

Only blobs the destination lacks travel; transfers run in parallel and transient failures
are retried; the manifest is written last and only if every blob arrived, so a failed copy
commits nothing. Names are write-once: a taken name raises ``CheckpointExistsError``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import CheckpointExistsError, CkptError, IntegrityError
from ..storage import Store, tensorfile
from ..storage.blobs import PutResult, hash_chunks
from ..types import CheckpointInfo, utc_now, validate_name
from .environment import library_versions
from .refs import resolve_ref
from .sources import (
    HashCache,
    Source,
    SourceFile,
    check_not_lfs_pointer,
    resolve_source,
    safe_relpath,
)

__all__ = ["MARKER", "copy", "materialize", "use"]

Progress = Callable[[int, int], None]
MARKER = ".ckpt_notebook.json"
PATH_ENV = "CKPT_NOTEBOOK_CHECKPOINT_PATH"


def _open_store(store: str | os.PathLike[str] | Store | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def copy(src: str | os.PathLike[str], name: str, *, to: str | Store | None = None,
         store: str | Store | None = None, progress: Progress | None = None,
         hash_cache: HashCache | None = None) -> CheckpointInfo:
    """Copy ``src`` into a new named checkpoint ``name`` in ``to`` (default: the store).

    ``src`` is a folder, a file, an archive (extracted as it is imported), a URL (``s3://``,
    ``gs://``, ``az://``, ``hf://owner/repo[/sub][@rev]``, ``http(s)://``) or a checkpoint
    REF of ``store``.
    """
    validate_name(name)
    source_store = _open_store(store)
    dest = _open_store(to) if to is not None else source_store
    if dest.exists(name):
        raise CheckpointExistsError(f"a checkpoint named {name!r} already exists in {dest.url};"
                                    " names are write-once: pick another (e.g. add -v2)")
    cache = hash_cache or _default_cache()
    source = resolve_source(os.fspath(src), source_store, cache=cache)
    try:
        if source.checkpoint is not None:
            return _copy_checkpoint(source_store, source.checkpoint, dest, name, progress)
        return _import_files(source, dest, name, progress, cache)
    finally:
        source.close()


def _default_cache() -> HashCache | None:
    try:
        return HashCache()
    except Exception:  # a read-only home must not stop a copy
        return None


class _Meter:
    """Thread-safe byte counter feeding a progress callback."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            done = self.done
        if self.progress is not None:
            self.progress(done, self.total)


def _parallel(dest: Store, fn: Callable[[Any], PutResult], items: list[Any]) -> list[PutResult]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(dest.blobs.workers, len(items)),
                            thread_name_prefix="ckpt-copy") as pool:
        return list(pool.map(fn, items))


def _import_files(source: Source, dest: Store, name: str, progress: Progress | None,
                  cache: HashCache | None) -> CheckpointInfo:
    dest.ensure_writable()
    meter = _Meter(source.total_bytes, progress)
    known = dest.blobs.existing({f.digest for f in source.files if f.digest})

    def put(f: SourceFile) -> PutResult:
        opener = _lfs_checked(f) if f.check_lfs else f.open
        result = dest.blobs.put_file(opener, f.size, digest=f.digest, known=known)
        if cache is not None and f.local_path and f.digest != result.digest:
            cache.put(f.local_path, result.digest)
        meter.add(f.size)
        return result

    with dest.lock():
        results = _parallel(dest, put, source.files)
        files = {f.relpath: {"blob": r.digest, "size": r.size, "executable": f.executable}
                 for f, r in zip(source.files, results, strict=True)}
        blobs = {r.digest: r.size for r in results}
        info = CheckpointInfo(id=name, name=name, kind="files", created=utc_now(),
                              logical_bytes=source.total_bytes,
                              new_bytes=sum({r.digest: r.size for r in results if r.new}
                                            .values()),
                              source=source.description)
        dest.commit(info, objects={}, blobs=blobs, files=files,
                    library_versions=library_versions())
    return info


def _lfs_checked(f: SourceFile) -> Callable[[], BinaryIO]:
    def opener() -> BinaryIO:
        handle = f.open()
        if f.size <= 1024:
            data = handle.read()
            handle.close()
            check_not_lfs_pointer(data, where=f.relpath)
            return io.BytesIO(data)
        return handle

    return opener


def _copy_checkpoint(src: Store, info: CheckpointInfo, dest: Store, name: str,
                     progress: Progress | None) -> CheckpointInfo:
    doc = src.manifest(info.id)
    blobs: dict[str, int] = {d: int(s) for d, s in doc["blobs"].items()}
    new_bytes = 0
    if dest.url != src.url:
        dest.ensure_writable()
        missing = sorted(set(blobs) - dest.blobs.existing(set(blobs)))
        meter = _Meter(sum(blobs[d] for d in missing), progress)

        def put(digest: str) -> PutResult:
            result = dest.blobs.copy_from(src.blobs, digest, blobs[digest],
                                          where=f"checkpoint {info.id}")
            meter.add(blobs[digest])
            return result

        with dest.lock():
            new_bytes = sum(r.size for r in _parallel(dest, put, missing) if r.new)
    named = CheckpointInfo.from_json({**info.to_json(), "id": name, "name": name,
                                      "created": utc_now(), "parent": info.id,
                                      "new_bytes": new_bytes, "source": f"{src.url}#{info.id}",
                                      "committed": True})
    with dest.lock():
        dest.commit(named, objects=doc["objects"], blobs=blobs, files=doc.get("files"),
                    library_versions=doc.get("library_versions"))
    return named


# -- materialize ----------------------------------------------------------------------------
def materialize(ref: str, directory: str | os.PathLike[str], *,
                store: str | Store | None = None, progress: Progress | None = None) -> Path:
    """Write a checkpoint's files into ``directory`` (read-only files) and return it.

    A files checkpoint gives back its files; a training state gives ``<object>.safetensors``
    per object with tensors plus ``manifest.json``. Materializing again into a folder that
    still verifies reuses it.
    """
    s = _open_store(store)
    info = resolve_ref(s, ref)
    out = Path(directory)
    if _reusable(out, info.id):
        return out
    if out.exists() and any(out.iterdir()):
        raise CkptError(f"cannot materialize {info.id} into {out}: the folder is not empty "
                        "(and does not hold this checkpoint); choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    doc = s.manifest(info.id)
    written = (_write_files(s, doc, out, progress) if doc.get("files")
               else _write_state(s, doc, out))
    marker = {"checkpoint": info.id, "store": s.url, "files": written}
    (out / MARKER).write_text(json.dumps(marker, indent=1))
    return out


def _write_files(s: Store, doc: dict[str, Any], out: Path,
                 progress: Progress | None) -> dict[str, str]:
    files: dict[str, Any] = doc["files"]
    meter = _Meter(sum(int(f["size"]) for f in files.values()), progress)
    written = {}
    for rel, entry in files.items():
        safe = safe_relpath(rel, where=f"checkpoint {doc['checkpoint']['id']}")
        data = s.blobs.read(entry["blob"], int(entry["size"]),
                            where=f"checkpoint {doc['checkpoint']['id']}: file {rel}")
        _write_readonly(out / safe, data, executable=bool(entry.get("executable")))
        written[safe] = entry["blob"]
        meter.add(int(entry["size"]))
    return written


def _write_state(s: Store, doc: dict[str, Any], out: Path) -> dict[str, str]:
    ckpt_id = doc["checkpoint"]["id"]
    written = {}
    for obj_name, obj in doc["objects"].items():
        tensors = obj.get("tensors", ())
        if not tensors:
            continue
        cache: dict[str, dict[str, Any]] = {}
        chosen = {}
        for t in tensors:
            if t["blob"] not in cache:
                buf = s.blobs.read(t["blob"], t["blob_size"],
                                   where=f"checkpoint {ckpt_id}: {obj_name}: tensor {t['path']}")
                cache[t["blob"]] = tensorfile.decode(buf)
            chosen[t["path"]] = cache[t["blob"]][t["key"]]
        rel = safe_relpath(f"{obj_name}.safetensors", where=f"checkpoint {ckpt_id}")
        data = b"".join(bytes(c) for c in tensorfile.encode_chunks(chosen))
        _write_readonly(out / rel, data, executable=False)
        written[rel] = hash_chunks([data])
    manifest_bytes = json.dumps(doc, indent=1).encode()
    _write_readonly(out / "manifest.json", manifest_bytes, executable=False)
    written["manifest.json"] = hash_chunks([manifest_bytes])
    return written


def _write_readonly(path: Path, data: bytes | bytearray, *, executable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".ckpt-tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o555 if executable else 0o444)
    os.replace(tmp, path)


def _reusable(out: Path, ckpt_id: str) -> bool:
    """A folder materialized from this checkpoint earlier whose files all still verify."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    if marker.get("checkpoint") != ckpt_id:
        return False
    for rel, digest in marker.get("files", {}).items():
        try:
            if hash_chunks([(out / rel).read_bytes()]) != digest:
                return False
        except OSError:
            return False
    return True


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ckpt_notebook" / "materialized"


def use(ref: str, *, store: str | Store | None = None,
        progress: Progress | None = None) -> Path:
    """Materialize a checkpoint into the cache and point ``$CKPT_NOTEBOOK_CHECKPOINT_PATH``
    at it, so training code reads it like a mounted checkpoint."""
    s = _open_store(store)
    info = resolve_ref(s, ref)
    key = hashlib.sha256(s.url.encode()).hexdigest()[:12]
    path = materialize(info.id, cache_dir() / key / info.id, store=s, progress=progress)
    os.environ[PATH_ENV] = str(path)
    return path


def verify_materialized(path: str | os.PathLike[str]) -> None:
    """Raise :class:`IntegrityError` unless ``path`` still holds what was materialized."""
    out = Path(path)
    marker = json.loads((out / MARKER).read_text())
    if not _reusable(out, marker["checkpoint"]):
        raise IntegrityError(f"{out} no longer matches checkpoint {marker['checkpoint']}")

