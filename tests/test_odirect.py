"""Direct I/O writes: byte-exact files whatever the chunks' alignment, zero-copy where the
layout allows it, and a buffered fallback where the file system refuses O_DIRECT."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import blake3
import numpy as np
import pytest
import safetensors
import torch

import ckpt_notebook as ckn
from ckpt_notebook.capture.torch import BufferPool
from ckpt_notebook.storage import odirect, tensorfile
from ckpt_notebook.types import DATA_ALIGN, DATA_PHASE, TensorData

pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT here")


def _takes_direct_io(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


@pytest.fixture
def direct_dir(tmp_path: Path) -> Path:
    if not _takes_direct_io(tmp_path):
        pytest.skip(f"{tmp_path}'s file system refuses O_DIRECT")
    return tmp_path


def _at(buf: np.ndarray, phase: int, n: int) -> memoryview:
    """``n`` writable bytes of ``buf`` starting ``phase`` bytes past a block boundary."""
    start = (phase - buf.ctypes.data) % DATA_ALIGN
    view = memoryview(buf)[start:start + n]
    view[:] = np.random.default_rng(phase + n).integers(0, 256, n, dtype=np.uint8).tobytes()
    return view


@pytest.fixture
def spy_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every write the direct path issues, as (address, length)."""
    seen: list[tuple[int, int]] = []
    real = odirect._write_all

    def spy(fd: int, view: memoryview) -> None:
        seen.append((odirect._address(view) or 0, view.nbytes))
        real(fd, view)

    monkeypatch.setattr(odirect, "_write_all", spy)
    return seen


LAYOUTS = {
    "header then phase-aligned tensor": lambda b: [b"H" * 4160, _at(b, 0, 3 * DATA_ALIGN + 17)],
    "aligned tensor, exact blocks": lambda b: [_at(b, 0, 4 * DATA_ALIGN)],
    "misaligned tensor": lambda b: [b"xyz", _at(b, 100, 5 * DATA_ALIGN + 1)],
    "larger than the bounce buffer": lambda b: [b"h" * 10, _at(b, 7, (9 << 20) + 5)],
    "read-only and empty chunks": lambda b: [b"", bytes(range(256)) * 40, b"", b"tail"],
    "tiny": lambda b: [b"a"],
    "two tensors at the same phase": lambda b: [b"h" * 64, _at(b, 64, 2 * DATA_ALIGN),
                                               _at(b[(4 << 20):], 64, DATA_ALIGN * 3 - 64)],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_files_are_byte_exact_whatever_the_alignment(direct_dir: Path, layout: str) -> None:
    buf = np.zeros(24 << 20, dtype=np.uint8)
    chunks = LAYOUTS[layout](buf)
    path = direct_dir / "out"
    odirect.write(str(path), chunks)
    assert path.read_bytes() == b"".join(bytes(c) for c in chunks)


def test_an_aligned_tensor_is_written_straight_from_its_memory(
        direct_dir: Path, spy_writes: list[tuple[int, int]]) -> None:
    buf = np.zeros(8 << 20, dtype=np.uint8)
    header = b"h" * (DATA_ALIGN + DATA_PHASE)  # the tensor starts DATA_PHASE into a block
    data = _at(buf, DATA_PHASE, (4 << 20) + 123)
    odirect.write(str(direct_dir / "blob"), [header, data])
    start = odirect._address(data)
    assert start is not None
    head = DATA_ALIGN - DATA_PHASE
    body = (data.nbytes - head) // DATA_ALIGN * DATA_ALIGN
    assert (start + head, body) in spy_writes  # no copy of the bulk of the bytes
    blocks = -(-(len(header) + data.nbytes) // DATA_ALIGN)
    assert sum(n for _, n in spy_writes) == blocks * DATA_ALIGN  # the tail padded, then cut
    assert (direct_dir / "blob").read_bytes() == header + bytes(data)


def test_a_misaligned_tensor_goes_through_the_bounce_buffer(
        direct_dir: Path, spy_writes: list[tuple[int, int]]) -> None:
    buf = np.zeros(8 << 20, dtype=np.uint8)
    data = _at(buf, 8, 1 << 20)
    odirect.write(str(direct_dir / "blob"), [b"h" * 64, data])
    start = odirect._address(data) or 0
    assert all(addr % DATA_ALIGN == 0 and n % DATA_ALIGN == 0 for addr, n in spy_writes)
    assert not any(start <= addr < start + data.nbytes for addr, _ in spy_writes)
    assert (direct_dir / "blob").read_bytes() == b"h" * 64 + bytes(data)


@pytest.fixture
def refusing_fs(direct_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A folder whose file system answers O_DIRECT as one without it does (EINVAL at open).
    Every file system this machine offers takes O_DIRECT (tmpfs too, since Linux 6.6), so
    the refusal is injected at the one call that sees it."""
    real_open = os.open

    def open_(path: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(odirect.os, "open", open_)
    yield direct_dir
    odirect._refused.discard(os.stat(direct_dir).st_dev)


def test_a_file_system_without_direct_io_gets_a_buffered_write(refusing_fs: Path) -> None:
    buf = np.zeros(8 << 20, dtype=np.uint8)
    chunks = [b"h" * 10, _at(buf, 64, 5 << 20)]
    odirect.write(str(refusing_fs / "f"), chunks)
    assert (refusing_fs / "f").read_bytes() == b"".join(bytes(c) for c in chunks)
    assert not odirect.supported(str(refusing_fs))  # refused once, not asked again


def test_a_write_refused_halfway_starts_again_buffered(
        direct_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = odirect._write_direct

    def half(fd: int, chunks: list[memoryview]) -> None:
        real(fd, [chunks[0]])  # some bytes land, then the device says no
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(odirect, "_write_direct", half)
    buf = np.zeros(8 << 20, dtype=np.uint8)
    chunks = [b"h" * 5000, _at(buf, 64, 5 << 20)]
    try:
        odirect.write(str(direct_dir / "f"), chunks)
        assert (direct_dir / "f").read_bytes() == b"".join(bytes(c) for c in chunks)
        assert not odirect.supported(str(direct_dir))
    finally:
        odirect._refused.discard(os.stat(direct_dir).st_dev)


def test_direct_io_can_be_switched_off(direct_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                       spy_writes: list[tuple[int, int]]) -> None:
    monkeypatch.setenv("CKPT_NOTEBOOK_DIRECT_IO", "0")
    assert not odirect.supported(str(direct_dir))
    odirect.write(str(direct_dir / "f"), [b"x" * (5 << 20)])
    assert spy_writes == [(0, 5 << 20)]  # one buffered write of the read-only bytes


def test_an_existing_file_is_never_overwritten(direct_dir: Path) -> None:
    (direct_dir / "f").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        odirect.write(str(direct_dir / "f"), [b"x" * (5 << 20)])
    assert (direct_dir / "f").read_bytes() == b"keep"


def test_single_tensor_blobs_place_data_at_the_phase_and_stay_safetensors(
        tmp_path: Path) -> None:
    t = torch.arange(3 << 18, dtype=torch.float32)  # 3 MiB: a blob of its own
    chunks = tensorfile.encode_chunks({"t": TensorData("F32", tuple(t.shape),
                                                       memoryview(t.numpy()).cast("B"))},
                                      phase=DATA_PHASE)
    assert len(chunks[0]) % DATA_ALIGN == DATA_PHASE
    path = tmp_path / "blob.safetensors"
    path.write_bytes(b"".join(bytes(c) for c in chunks))
    with safetensors.safe_open(str(path), "pt") as f:
        assert torch.equal(f.get_tensor("t"), t)


def test_a_blob_is_named_by_content_not_by_where_the_tensor_lives(store_dir: Path) -> None:
    a = torch.nn.Linear(1024, 2048)  # 8 MiB weight: its own blob, written with direct I/O
    b = torch.nn.Linear(1024, 2048)
    with torch.no_grad():
        b.weight.copy_(a.weight[:, :])
        b.bias.copy_(a.bias)
    assert a.weight.data_ptr() != b.weight.data_ptr()
    ckn.Checkpointer(store_dir, model=a, rng=False).save(wait=True)
    info = ckn.Checkpointer(store_dir, model=b, rng=False).save(wait=True)
    assert info.new_bytes < 4096  # the second save wrote no tensor bytes


def test_large_tensors_roundtrip_through_sync_and_async_saves(store_dir: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 3000), torch.nn.Linear(3000, 700))
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    first = ckpt.save(step=1, wait=True)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-1)
    second = ckpt.save(step=2)  # async: from the phase-aligned snapshot buffers
    ckpt.wait()
    assert ckpt.verify() == []
    ckpt.restore(first.id)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    ckpt.restore(second.id)
    assert all(torch.equal(v, -expected[k]) for k, v in model.state_dict().items())
    for blob in (store_dir / "blobs").rglob("*"):
        if blob.is_file():  # every blob still hashes to its name
            assert blake3.blake3(blob.read_bytes()).hexdigest() == blob.name


def test_snapshot_buffers_sit_at_the_phase() -> None:
    pool = BufferPool()
    for dtype in (torch.float32, torch.bfloat16, torch.int64, torch.uint8):
        buf = pool.take(f"w.{dtype}", torch.empty(1000, 33, dtype=dtype))
        assert buf.data_ptr() % DATA_ALIGN == DATA_PHASE
        assert buf.shape == (1000, 33) and buf.dtype == dtype and buf.is_contiguous()
