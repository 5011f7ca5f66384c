"""The one hashing module (storage/hashing.py) and the one progress throttle (ui/progress.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from ckpt_notebook.errors import IntegrityError
from ckpt_notebook.storage import Store, hashing, inplace
from ckpt_notebook.storage.blobs import blob_path
from ckpt_notebook.ui.progress import INTERVAL_S, Throttle

MiB = 1 << 20
WHAT = "checkpoint c: blob 0123"
AFTER = "; nothing was committed"


def _data(n: int) -> bytes:
    return blake3.blake3(b"seed").digest(length=n)


class _Reads(io.BytesIO):
    """A stream that records the sizes it was asked to read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[int] = []

    def read(self, n: int | None = -1) -> bytes:
        self.asked.append(-1 if n is None else n)
        return super().read(n)


# -- hashing --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 4 * MiB - 1, 4 * MiB, 9 * MiB + 7])
def test_every_hash_is_blake3_of_the_bytes(tmp_path: Path, n: int) -> None:
    """Bytes, chunks, a stream and a file give the reference digest, on both sides of the
    threading threshold and across chunk boundaries."""
    data = _data(n)
    want = blake3.blake3(data).hexdigest()
    path = tmp_path / "f"
    path.write_bytes(data)
    assert hashing.hash_bytes(data) == want
    assert hashing.hash_bytes(memoryview(bytearray(data))) == want
    assert hashing.hash_chunks([data[:3], memoryview(data)[3:]]) == want
    assert hashing.hash_stream(io.BytesIO(data)) == (want, n)
    assert hashing.hash_file(path) == (want, n)
    assert hashing.hash_file(path, chunk_size=MiB, threads=False) == (want, n)


def test_a_stream_is_read_in_chunks_of_the_same_size() -> None:
    stream = _Reads(_data(2 * hashing.CHUNK + 5))
    hashing.hash_stream(stream, sink=lambda _: None)
    assert set(stream.asked) == {hashing.CHUNK}
    assert len(stream.asked) == 4  # three chunks, then the empty read at the end


def test_a_good_stream_passes_and_every_chunk_reaches_the_consumer() -> None:
    data = _data(2 * hashing.CHUNK + 123)
    out, ticks, bad = io.BytesIO(), [], []
    hashing.verify_stream(io.BytesIO(data), blake3.blake3(data).hexdigest(), len(data),
                          what=WHAT, after=AFTER, sink=out.write, progress=ticks.append,
                          on_bad=lambda: bad.append(1) or True)
    assert out.getvalue() == data
    assert ticks == [hashing.CHUNK, hashing.CHUNK, 123]
    assert bad == []


def _flipped(data: bytes) -> bytes:
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


@pytest.mark.parametrize(("given", "problem"), [
    (_flipped, "corrupt (hash mismatch)"),
    (lambda d: d[:-10], "truncated (990 of 1000 bytes)"),
    (lambda d: d + b"more", "corrupt (1004 bytes, expected 1000)"),
])
def test_a_bad_stream_raises_the_callers_message(given: Callable[[bytes], bytes],
                                                 problem: str) -> None:
    data = _data(1000)
    digest = blake3.blake3(data).hexdigest()
    with pytest.raises(IntegrityError) as raised:
        hashing.verify_stream(io.BytesIO(given(data)), digest, 1000, what=WHAT, after=AFTER)
    assert str(raised.value) == f"{WHAT} is {problem}{AFTER}"
    with pytest.raises(IntegrityError) as raised:  # a bad blob that moved to quarantine
        hashing.verify_stream(io.BytesIO(given(data)), digest, 1000, what=WHAT, after=AFTER,
                              on_bad=lambda: True)
    assert str(raised.value) == f"{WHAT} is {problem}; quarantined{AFTER}"


def test_sound_bytes_listed_with_the_wrong_size_are_not_bad() -> None:
    data = _data(1000)
    called = []
    with pytest.raises(IntegrityError, match=f"^{WHAT} is {hashing.MISLISTED} 999 bytes but "
                       r"holds 1000 \(the blob is intact: the manifest is wrong\)$"):
        hashing.verify_stream(io.BytesIO(data), blake3.blake3(data).hexdigest(), 999,
                              what=WHAT, on_bad=lambda: called.append(1) or True)
    assert called == []  # never quarantined


def test_the_callers_keep_their_messages(tmp_path: Path) -> None:
    """A flipped byte of a large blob, seen by each reader that streams or re-hashes it."""
    store = Store(tmp_path / "store")
    data = _data(3 * MiB)
    digest = store.blobs.put([data]).digest
    path = Path(store.backend.path(blob_path(digest)))
    path.chmod(0o644)

    def flip() -> None:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(_flipped(data))

    flip()
    with pytest.raises(IntegrityError) as raised:
        store.blobs.stream_into(digest, len(data), io.BytesIO(), where="ckpt x")
    assert str(raised.value) == (f"ckpt x: blob {digest[:16]} in {store.url} is corrupt "
                                 "(hash mismatch); quarantined; nothing was committed")
    flip()
    assert store.blobs.check(digest, len(data)) == "corrupt (hash mismatch); quarantined"
    flip()
    with pytest.raises(IntegrityError, match=rf"^ckpt y: blob {digest[:16]} is corrupt \(hash "
                       r"mismatch\); quarantined; nothing was restored \(save again"):
        inplace.verify_blobs(store.blobs, [(digest, len(data), "ckpt y")])
    assert not path.exists() and (tmp_path / "store" / "quarantine" / digest).exists()


# -- the progress throttle ------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_ticks_once_per_interval_and_always_at_the_end() -> None:
    clock = _Clock()
    throttle = Throttle(0.5, clock=clock)
    shown = []
    for step in range(20):  # an update every 1/8 s (exact in binary) for 2.5 s
        clock.now = 1000.0 + step / 8
        if throttle.due(step, 100) is not None:
            shown.append(step)
    assert shown == [0, 4, 8, 12, 16]
    assert throttle.due(100, 100) == clock.now  # the last update shows at once
    assert throttle.due(99, 100) is None
    throttle.reset()  # a new transfer: its first update shows
    assert throttle.due(1, 100) == clock.now

    assert Throttle().interval_s == INTERVAL_S == 0.1  # one interval for every bar
