"""Only blobs the store lacks are written: 10% of tensors changed -> about 10% new bytes."""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import pytest
import torch

import ckpt_notebook as ckn
from ckpt_notebook.errors import BackgroundSaveError, StoreError


def big_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # 20 weight tensors of 1 MiB each plus small biases: large tensors get blobs of their own.
    return torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(20)])


def test_ten_percent_changed_writes_at_most_twelve_percent(store_dir: Path) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    first = ckpt.save(step=1, wait=True)
    assert first.new_bytes is not None and first.new_bytes >= first.logical_bytes
    with torch.no_grad():
        for layer in list(model)[::10]:  # 2 of 20 layers: 10% of the tensor bytes
            layer.weight.add_(1.0)
    second = ckpt.save(step=2, wait=True)
    assert second.logical_bytes == first.logical_bytes
    assert second.new_bytes is not None
    assert second.new_bytes <= 0.12 * second.logical_bytes, (second.new_bytes, second.logical_bytes)
    assert second.new_bytes >= 0.09 * second.logical_bytes


def test_unchanged_save_writes_almost_nothing(store_dir: Path) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    ckpt.save(wait=True)
    again = ckpt.save(wait=True)
    assert again.new_bytes == 0
    blobs = [p for p in (store_dir / "blobs").rglob("*") if p.is_file()]
    ckpt.save(wait=True)
    assert len([p for p in (store_dir / "blobs").rglob("*") if p.is_file()]) == len(blobs)


def test_blobs_are_safetensors_files(store_dir: Path) -> None:
    from safetensors.torch import load_file

    model = big_model()
    ckn.Checkpointer(store_dir, model=model, rng=False).save(wait=True)
    found = 0
    for blob in (store_dir / "blobs").rglob("*"):
        if blob.is_file():
            tensors = load_file(str(blob))
            assert tensors
            found += 1
    assert found >= 20


# -- the hash-then-write pipeline ------------------------------------------------------------
def _record_hashes(monkeypatch: pytest.MonkeyPatch, *, min_size: int = 0) -> list[bytes]:
    """Spy on the store's hashing: the first 16 bytes of everything of at least
    ``min_size`` bytes hashed, in order."""
    from ckpt_notebook.storage import blobs

    seen: list[bytes] = []
    real = blobs.hash_chunks

    def spy(chunks: Any) -> str:
        chunks = list(chunks)
        if sum(memoryview(c).nbytes for c in chunks) >= min_size:
            seen.append(b"".join(bytes(memoryview(c)) for c in chunks)[:16])
        return real(chunks)

    monkeypatch.setattr(blobs, "hash_chunks", spy)
    return seen


def test_put_many_keeps_input_order_and_writes_a_repeated_blob_once(store_dir: Path) -> None:
    store = ckn.Store(store_dir)
    items = [[b"a" * 100], [b"b" * 200], [b"a" * 100], [b"c" * 300]]
    results = store.blobs.put_many(items)
    assert [r.size for r in results] == [100, 200, 100, 300]
    assert results[0].digest == results[2].digest
    assert [r.new for r in results] == [True, True, False, True]
    assert len([p for p in (store_dir / "blobs").rglob("*") if p.is_file()]) == 3
    assert [r.new for r in store.blobs.put_many(items)] == [False] * 4


def test_put_many_hashes_hinted_blobs_first(store_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_hashes(monkeypatch)
    items = [[bytes([i]) * 64] for i in range(5)]
    ckn.Store(store_dir).blobs.put_many(items, first=[3, 1])
    assert [s[0] for s in seen] == [1, 3, 0, 2, 4]


def test_a_failed_write_stops_put_many_and_is_raised(store_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_notebook.storage import blobs

    store = ckn.Store(store_dir)
    writes: list[Future[Any]] = []  # every write put_many hands to its workers
    hashed: list[str] = []
    real_hash, real_write = blobs.hash_chunks, store.blobs.backend.write_atomic

    class Recording(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            writes.append(super().submit(fn, *args, **kwargs))
            return writes[-1]

    def hash_once_the_write_failed(chunks: Any) -> str:
        # Blob 1's write fails; the blobs after it are hashed only once that failure is in,
        # however the threads are scheduled: so the count below is what put_many does then.
        if bytes(memoryview(chunks[0]))[:1] >= b"\x02":
            wait(list(writes), timeout=30, return_when=FIRST_EXCEPTION)
        hashed.append(real_hash(chunks))
        return hashed[-1]

    def failing(rel: str, chunks: Any, **kw: Any) -> None:
        if bytes(memoryview(chunks[0]))[:1] == b"\x01":
            raise OSError(28, "No space left on device")
        real_write(rel, chunks, **kw)

    monkeypatch.setattr(blobs, "ThreadPoolExecutor", Recording)
    monkeypatch.setattr(blobs, "hash_chunks", hash_once_the_write_failed)
    monkeypatch.setattr(store.blobs.backend, "write_atomic", failing)
    items = [[bytes([i]) * 4096] for i in range(40)]
    with pytest.raises(OSError, match="No space left"):
        store.blobs.put_many(items)
    assert len(writes) >= 2  # the writes went through the recorded pool
    assert len(hashed) < 20  # hashing stopped soon after the write failed
    assert not store.blobs.has(real_hash(items[1]))
    assert not [p for p in (store_dir / "tmp").rglob("*") if p.is_file()]


def test_a_save_hashes_the_tensors_that_moved_first(store_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    ckpt.save(wait=True)
    seen = _record_hashes(monkeypatch)
    with torch.no_grad():
        model[-1].weight.mul_(2.0)
    info = ckpt.save(wait=True)
    # the safetensors header comes first; the last layer's blob is the one hashed first
    last = store_blob_of(store_dir, info.id, "model", "19.weight")
    assert seen[0] == last[:16]
    assert info.new_bytes is not None and info.new_bytes < 0.1 * info.logical_bytes


def store_blob_of(store_dir: Path, checkpoint: str, obj: str, key: str) -> bytes:
    store = ckn.Store(store_dir)
    manifest = store.manifest(checkpoint)
    ref = next(t for t in manifest.objects[obj].tensors if t.path == key)
    digest = ref.blob
    return (store_dir / "blobs" / digest[:2] / digest).read_bytes()


# -- async saves: a snapshot buffer that already holds a tensor's bytes ----------------------
def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [layer.weight for layer in model]  # type: ignore[union-attr]


def test_same_bytes_is_exact() -> None:
    from ckpt_notebook.capture import torch as torch_capture
    from ckpt_notebook.capture.torch import same_bytes

    assert torch_capture._MEMCMP is not None  # the fast path is the one being tested
    a = torch.randn(1 << 16)
    assert same_bytes(a, a.clone())
    b = a.clone()
    b[12345] += 1.0  # not among the sampled elements: the full comparison finds it
    assert not same_bytes(a, b)
    zeros = torch.zeros(8)
    assert not same_bytes(zeros, -zeros)  # equal as floats, different bytes
    nan = torch.full((8,), float("nan"))
    other_nan = nan.view(torch.int32).add(1).view(torch.float32)
    assert not same_bytes(nan, other_nan) and same_bytes(nan, nan.clone())
    assert not same_bytes(a, a.to(torch.float64)) and not same_bytes(a[::2], a[1::2])


def test_async_save_skips_tensors_its_buffers_already_hold(store_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    ckpt.save(step=1)
    ckpt.wait()
    seen = _record_hashes(monkeypatch, min_size=1 << 20)
    with torch.no_grad():
        _weights(model)[3].add_(1.0)
        _weights(model)[7].data.mul_(2.0)  # .data: the version counter does not move
    ckpt.save(step=2)
    info = ckpt.wait()
    assert info is not None and info.new_bytes is not None
    assert len(seen) == 2, len(seen)  # the two changed weights; the other 18 are not hashed
    assert 2 * (1 << 20) <= info.new_bytes < 3 * (1 << 20)
    assert ckpt.verify(info.id) == []
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for w in _weights(model):
            w.zero_()
    ckpt.restore(info.id)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_a_failed_async_save_makes_the_next_one_hash_everything(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    ckpt.save(step=1)
    ckpt.wait()
    store = ckpt.store
    real = store.commit

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "commit", refuse)
    with torch.no_grad():
        _weights(model)[0].add_(1.0)
    ckpt.save(step=2)
    with pytest.raises(BackgroundSaveError, match=r"background save of .+ failed: StoreError: "
                       r"store .+ is full \(.+: No space left on device\)") as failed:
        ckpt.wait()
    assert isinstance(failed.value.__cause__, StoreError)
    monkeypatch.setattr(store, "commit", real)
    seen = _record_hashes(monkeypatch, min_size=1 << 20)
    ckpt.save(step=3)
    info = ckpt.wait()
    assert info is not None and len(seen) == 20  # every weight
    assert ckpt.verify(info.id) == []


def test_a_known_blob_that_gc_removed_is_written_again(store_dir: Path) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    ckpt.save(step=1)
    first = ckpt.wait()
    assert first is not None
    ckpt.delete(first.id, force=True)
    ckpt.gc()
    assert not [p for p in (store_dir / "blobs").rglob("*") if p.is_file()]
    ckpt.save(step=2)  # every buffer still holds the bytes of step 1
    again = ckpt.wait()
    assert again is not None and again.new_bytes is not None
    assert again.new_bytes >= again.logical_bytes  # every blob written again (plus headers)
    assert ckpt.verify(again.id) == []


# -- sync saves: host copies to compare with --------------------------------------------------
def _restores_exactly(ckpt: ckn.Checkpointer, model: torch.nn.Module, checkpoint: str) -> bool:
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for w in _weights(model):
            w.zero_()
    ckpt.restore(checkpoint)
    return all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_sync_saves_skip_tensors_that_match_their_host_copy(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False, async_save=False)
    ckpt.save(step=1)  # a first save keeps no copies...
    seen = _record_hashes(monkeypatch, min_size=1 << 20)
    ckpt.save(step=2)  # ...the second hashes everything and copies it
    assert len(seen) == 20
    seen.clear()
    with torch.no_grad():
        _weights(model)[3].add_(1.0)
        _weights(model)[7].data.mul_(2.0)  # .data: the version counter does not move
    info = ckpt.save(step=3)
    assert len(seen) == 2, len(seen)  # the two changed weights; 18 matched their copies
    assert info.new_bytes is not None and 2 * (1 << 20) <= info.new_bytes < 3 * (1 << 20)
    assert ckpt.verify(info.id) == []
    seen.clear()
    with torch.no_grad():
        _weights(model)[7].data.mul_(2.0)  # changed again: its copy was refreshed at step 3
    info = ckpt.save(step=4)
    assert len(seen) == 1
    assert _restores_exactly(ckpt, model, info.id)


def test_a_copy_that_failed_to_refresh_is_not_trusted(store_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_notebook.capture.torch import Mirror

    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False, async_save=False)
    ckpt.save(step=1)
    real = Mirror.refresh

    def torn(self: Mirror) -> None:
        half = self.copy.numel() // 2
        self.copy.view(-1)[:half].copy_(self.live.view(-1)[:half])
        raise MemoryError("out of memory while copying")

    monkeypatch.setattr(Mirror, "refresh", torn)
    info = ckpt.save(step=2)  # the save itself does not depend on the copies
    assert ckpt.verify(info.id) == []
    monkeypatch.setattr(Mirror, "refresh", real)
    seen = _record_hashes(monkeypatch, min_size=1 << 20)
    ckpt.save(step=3)
    assert len(seen) == 20  # no copy vouches for anything
    seen.clear()
    ckpt.save(step=4)
    assert seen == []


def test_without_host_copies_every_save_hashes_every_tensor(
        store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False, host_copy=False)
    ckpt.save(step=1, wait=True)
    seen = _record_hashes(monkeypatch, min_size=1 << 20)
    ckpt.save(step=2, wait=True)
    ckpt.save(step=3)  # async: snapshots into fresh memory
    with torch.no_grad():
        _weights(model)[0].add_(1.0)  # after save() returned: must not reach step 3
    info = ckpt.wait()
    assert info is not None and len(seen) == 40
    assert info.new_bytes == 0
    assert ckpt.verify(info.id) == []


def test_put_many_takes_a_digest_a_check_vouches_for(store_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_notebook.storage.hashing import hash_chunks

    store = ckn.Store(store_dir)
    items = [[bytes([i]) * 1000] for i in range(3)]
    store.blobs.put_many(items)
    seen = _record_hashes(monkeypatch)
    asked: list[int] = []

    def vouch(i: int, digest: str | None) -> Any:
        return lambda: asked.append(i) or digest

    results = store.blobs.put_many(items, digests=[vouch(0, hash_chunks(items[0])),
                                                   vouch(1, None), None])
    assert asked == [0, 1] and len(seen) == 2  # blob 0 was vouched for; 1 and 2 were hashed
    assert [r.digest for r in results] == [hash_chunks(i) for i in items]
    assert not any(r.new for r in results)


@pytest.mark.parametrize("async_save", [False, True])
def test_a_checkpointer_moved_to_another_store_writes_every_blob_there(
        tmp_path: Path, async_save: bool) -> None:
    """Host copies remember which blob their bytes were stored as in the first store; in the
    second, that knowledge may spare a hash but never a write."""
    model = big_model()
    ckpt = ckn.Checkpointer(tmp_path / "a", model=model, rng=False, async_save=async_save)
    ckpt.save(step=1, wait=True)
    ckpt.save(step=2, wait=True)  # the host copies now vouch for blobs of store a
    ckpt.use_store(tmp_path / "b")
    info = ckpt.save(step=3, wait=True)
    assert info.new_bytes is not None and info.new_bytes >= info.logical_bytes
    assert ckpt.verify() == []
    fresh = big_model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    report = ckn.Checkpointer(tmp_path / "b", model=fresh, rng=False).restore("latest@any")
    assert report.restored == ["model"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 fresh.state_dict().values(), strict=True))
