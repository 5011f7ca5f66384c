"""Writing large blobs with direct I/O (``O_DIRECT``): straight from memory to the disk.

A plain ``write`` copies every byte into the page cache and the kernel writes it back
later; for a checkpoint of gigabytes that copy costs as much CPU as hashing the bytes, it
evicts the page cache the training job's data loader lives on, and the dirty pages make the
final ``fsync`` wait behind the kernel's writeback. ``O_DIRECT`` hands the memory to the
device instead, which is how the fastest checkpoint writers work (DeepSpeed's FastPersist,
for one). Its price is alignment: every write must start at a file offset, from a memory
address, and have a length that are multiples of the device's block size (:data:`ALIGN`
covers 512-byte and 4 KiB devices).

:func:`write` takes a file as a list of chunks (a safetensors header, then tensor memory)
and writes each chunk's aligned middle straight from its memory when the chunk's address
and its place in the file sit at the same offset within a block. Single-tensor blobs are
laid out so that they do (the tensor's bytes start :data:`~ckpt_notebook.types.DATA_PHASE`
bytes past a block boundary, where large torch CPU tensors begin); everything else goes
through a reused, aligned bounce buffer. A file system that refuses direct I/O (tmpfs,
some network file systems) gets a plain buffered write, and is not asked again.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import threading
from collections.abc import Sequence

from ..types import DATA_ALIGN

__all__ = ["ALIGN", "DIRECT_MIN", "supported", "write"]

ALIGN = DATA_ALIGN
DIRECT_MIN = 4 << 20  # files smaller than this are written through the page cache
_BOUNCE = 8 << 20  # the reused aligned buffer for bytes that cannot go straight from memory
_MAX_WRITE = 1 << 30  # one syscall writes at most this much (Linux caps a write near 2 GiB)
_O_DIRECT = getattr(os, "O_DIRECT", 0)

_local = threading.local()
_refused: set[int] = set()  # st_dev of file systems that refused O_DIRECT


def supported(directory: str) -> bool:
    """Whether direct I/O is worth trying for files in ``directory``."""
    if not _O_DIRECT or os.environ.get("CKPT_NOTEBOOK_DIRECT_IO", "1") == "0":
        return False
    try:
        return os.stat(directory).st_dev not in _refused
    except OSError:
        return False


def write(path: str, chunks: Sequence[bytes | memoryview], *, direct: bool = True,
          durable: bool = True) -> None:
    """Create ``path`` (which must not exist) holding ``chunks`` back to back; ``durable``
    fsyncs it. ``direct`` asks for direct I/O, used where the file system takes it."""
    fd = -1
    if direct and supported(os.path.dirname(path) or "."):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT, 0o644)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            _refuse(path)
    try:
        if fd >= 0:
            try:
                _write_direct(fd, chunks)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                # The device wants a larger alignment than ours, or the file system takes
                # the flag at open but not at write: start again through the page cache.
                _refuse(path)
                os.close(fd)
                fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
                _write_buffered(fd, chunks)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            _write_buffered(fd, chunks)
        if durable:
            os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)


def _refuse(path: str) -> None:
    with contextlib.suppress(OSError):
        _refused.add(os.stat(os.path.dirname(path) or ".").st_dev)


def _write_buffered(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    for chunk in chunks:
        _write_all(fd, memoryview(chunk).cast("B"))


def _write_all(fd: int, view: memoryview) -> None:
    while view.nbytes:
        n = os.write(fd, view[:_MAX_WRITE])
        view = view[n:]


def _bounce() -> memoryview:
    """This thread's aligned bounce buffer (anonymous mmap memory is page-aligned)."""
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = mmap.mmap(-1, _BOUNCE)
    return memoryview(buf)


def _address(view: memoryview) -> int | None:
    """Where ``view``'s bytes live, or None if that cannot be had (read-only buffers)."""
    if view.readonly or not view.nbytes:
        return None
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _write_direct(fd: int, chunks: Sequence[bytes | memoryview]) -> None:
    bounce = _bounce()
    fill = 0  # bytes waiting in the bounce buffer; the file offset is always aligned
    size = 0

    def flush(n: int) -> None:
        _write_all(fd, bounce[:n])

    def stage(data: memoryview) -> None:
        nonlocal fill
        while data.nbytes:
            k = min(data.nbytes, _BOUNCE - fill)
            bounce[fill:fill + k] = data[:k]
            fill += k
            data = data[k:]
            if fill == _BOUNCE:
                flush(fill)
                fill = 0

    for chunk in chunks:
        view = memoryview(chunk).cast("B")
        size += view.nbytes
        address = _address(view)
        if address is None or view.nbytes < 2 * ALIGN or (address - fill) % ALIGN:
            stage(view)
            continue
        # The chunk sits at the same offset within a block in memory and in the file: its
        # head completes the bounce buffer's last block, its aligned middle goes straight
        # from memory, its tail starts the next block.
        head = -address % ALIGN
        stage(view[:head])
        if fill:
            flush(fill)
            fill = 0
        body = (view.nbytes - head) // ALIGN * ALIGN
        _write_all(fd, view[head:head + body])
        stage(view[head + body:])
    if fill:
        padded = -fill % ALIGN
        bounce[fill:fill + padded] = bytes(padded)
        flush(fill + padded)
        os.ftruncate(fd, size)
