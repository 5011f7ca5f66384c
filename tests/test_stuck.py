"""Failures that must not leave a store stuck (issue 11, part 4).

- A disk that fills up: a save that meets ENOSPC applies the retention policy to make room and
  tries once more; without a policy the error says so, in one line. Tested on a real 16 MiB
  tmpfs mounted for the test (root only; skipped with the reason elsewhere).
- A writer killed mid-upload to S3 (moto on 127.0.0.1): its lock object no longer blocks gc,
  and gc aborts the multipart upload it left behind. A live holder still blocks gc.
- Two saves racing for one name: the loser is told the name is taken, in the same words as
  when the name was taken before it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import pythonpath_env
from servers import S3Server

from ckpt_notebook import Checkpointer
from ckpt_notebook.errors import (
    BackgroundSaveError,
    CheckpointExistsError,
    StoreBusyError,
    StoreError,
)
from ckpt_notebook.storage import Store
from ckpt_notebook.storage import locks as store_locks
from ckpt_notebook.storage.blobs import INLINE_LIMIT

torch = pytest.importorskip("torch")

HELPERS = Path(__file__).resolve().parent / "helpers"
MiB = 1 << 20


# --------------------------------------------------------------------------- disk full

WIDTH = 1250  # one float32 weight of 1250 x 1250: 5.96 MiB, so two fit in 16 MiB, three do not


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB file system (tmpfs), mounted for this test only."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 16 MiB tmpfs needs root (CI runs these tests as root)")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no mount command here to make a small file system")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 16 MiB tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fresh_weight(model: Any, seed: int) -> None:
    """New random values: every save writes a new 5.96 MiB blob (nothing dedups)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.weight.copy_(torch.rand(model.weight.shape, generator=gen))


def temp_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").glob("*")) if (root / "tmp").exists() else []


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_full_disk_with_a_policy_prunes_and_saves_on(small_fs: Path, async_save: bool) -> None:
    """keep_last=2 on a disk that holds two checkpoints but not three: without making room
    the third save would fail, and every one after it. It prunes the oldest and goes on,
    never deleting the newest complete checkpoint."""
    root = small_fs / "store"
    model = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    ckpt = Checkpointer(root, model=model, rng=False, async_save=async_save)
    ckpt.set_policy(keep_last=2)
    saved = []
    for step in range(1, 7):
        fresh_weight(model, step)
        ckpt.save(step=step)
        info = ckpt.wait() if async_save else ckpt.last
        assert info is not None and info.committed
        if saved:  # the newest complete checkpoint before this save survived it
            assert ckpt.store.exists(saved[-1])
        saved.append(info.id)
    ckpt.close()
    store = Store(root)
    assert [i.id for i in store.list()] == saved[-2:]
    assert all(not store.verify(i) for i in saved[-2:])
    assert temp_files(root) == []
    restored = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    Checkpointer(root, model=restored, rng=False).restore("latest")
    assert torch.equal(restored.weight, model.weight)


@pytest.mark.parametrize(("policy", "why"), [
    (None, "there is no retention policy to prune with"),
    ({"keep_last": 5}, "the retention policy (keep last 5) keeps every checkpoint"),
], ids=["no-policy", "keeps-all"])
def test_a_full_disk_without_room_to_make_says_so_in_one_line(small_fs: Path, policy: Any,
                                                              why: str) -> None:
    root = small_fs / "store"
    model = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    ckpt = Checkpointer(root, model=model, rng=False, async_save=False)
    if policy:
        ckpt.set_policy(**policy)
    for step in (1, 2):
        fresh_weight(model, step)
        ckpt.save(step=step)
    fresh_weight(model, 3)
    with pytest.raises(StoreError) as caught:
        ckpt.save(step=3)
    message = str(caught.value)
    assert "\n" not in message
    assert f"store {str(root)!r} is full" in message
    assert "MiB free" in message and f"cannot save step 3, {why};" in message
    assert "ckpt policy --keep-last N" in message and "ckpt prune" in message
    assert isinstance(caught.value, OSError)
    # nothing half-written: no temp file, no third checkpoint, the two verify
    assert temp_files(root) == []
    store = Store(root)
    assert len(store.list()) == 2
    assert all(not store.verify(i.id) for i in store.list())


def test_a_full_disk_fails_an_async_save_at_the_next_call(small_fs: Path) -> None:
    root = small_fs / "store"
    model = torch.nn.Linear(WIDTH, WIDTH, bias=False)
    ckpt = Checkpointer(root, model=model, rng=False, async_save=True)
    for step in (1, 2, 3):
        fresh_weight(model, step)
        ckpt.save(step=step)
    full = r"is full \(\d+\.\d MiB free: No space left on device\): cannot save step 3"
    with pytest.raises(BackgroundSaveError, match=full):
        ckpt.wait()
    assert temp_files(root) == []


def test_a_full_disk_never_kills_the_loop_over_metric_history(small_fs: Path) -> None:
    """Was: step() died with a raw OSError when the metric history could not be written.
    Now the rows stay in memory, the user is told once, and they land once there is space."""
    root = small_fs / "store"
    ckpt = Checkpointer(root, model=torch.nn.Linear(4, 4), rng=False)
    ckpt.step(1, {"loss": 1.0})
    ckpt.history.flush(force=True)
    filler = small_fs / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 20))
    with pytest.warns(RuntimeWarning, match="metric history of run .* is not written: store "
                                            ".* is full"):
        for step in range(2, 5):
            ckpt.step(step, {"loss": 1.0 / step})
            ckpt.history.flush(force=True)
    filler.unlink()
    ckpt.history.flush(force=True)
    ckpt.close()
    assert [r["step"] for r in Store(root).history.read(ckpt.run)] == [1, 2, 3, 4]


# --------------------------------------------------------------------------- locks on S3


def s3_store(server: S3Server, bucket: str, path: str = "store", **extra: Any) -> Store:
    return Store(server.url(bucket, path), **{**server.storage_options, **extra})


def incomplete_uploads(server: S3Server, bucket: str, prefix: str = "") -> list[str]:
    found = server.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    return [u["Key"] for u in found.get("Uploads", ())]


def abandon_upload(server: S3Server, bucket: str, key: str) -> None:
    """Start a multipart upload, send one part, never complete it."""
    client = server.client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1,
                       Body=b"x" * (5 * MiB))


def test_a_copy_killed_mid_upload_does_not_block_gc(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("killed")
    url = s3_server.url(bucket, "store")
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(INLINE_LIMIT + MiB))  # streamed: a multipart upload
    options = {**s3_server.storage_options, "default_block_size": 5 * MiB}
    env = {**pythonpath_env(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, str(HELPERS / "stalled_copy.py"), str(src), url,
                             "weights", json.dumps(options)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "UPLOADING", proc.stderr.read() if proc.stderr else line
        assert incomplete_uploads(s3_server, bucket, "store/blobs/")
        store = s3_store(s3_server, bucket)
        with pytest.raises(StoreBusyError):  # while the copy lives, its lock holds
            store.gc(timeout=1)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    started = time.monotonic()
    report = s3_store(s3_server, bucket).gc(timeout=5)
    assert time.monotonic() - started < 5
    assert report.locks_removed == 1
    assert report.uploads_aborted == 1
    assert "1 incomplete upload aborted" in str(report)
    assert incomplete_uploads(s3_server, bucket) == []
    assert s3_store(s3_server, bucket).list() == []  # the copy committed nothing


def test_gc_aborts_incomplete_uploads_in_its_store_only(s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket("mpu")
    store = s3_store(s3_server, bucket)
    store.ensure_writable()
    abandon_upload(s3_server, bucket, "store/blobs/ab/ab" + "0" * 62)
    abandon_upload(s3_server, bucket, "other/blobs/cd/cd" + "0" * 62)  # another store's
    time.sleep(1.1)  # S3 reports Initiated in whole seconds
    dry = store.gc(dry_run=True)
    assert dry.uploads_aborted == 1
    assert len(incomplete_uploads(s3_server, bucket)) == 2
    report = store.gc()
    assert report.uploads_aborted == 1
    assert incomplete_uploads(s3_server, bucket) == ["other/blobs/cd/cd" + "0" * 62]


def test_a_live_holder_still_blocks_gc(s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket("live")
    saver = s3_store(s3_server, bucket)
    saver.ensure_writable()
    with saver.lock(), pytest.raises(StoreBusyError, match="a save is running"):
        s3_store(s3_server, bucket).gc(timeout=1)
    assert s3_store(s3_server, bucket).gc(timeout=5).locks_removed == 0


# Lock objects as other holders left them, on an in-memory object store (same code as S3).

def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def forge(*, host: str | None = None, pid: int | None = None, start: str | None = None,
          age: float = 0.0, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    host = socket.gethostname() if host is None else host
    pid = os.getpid() if pid is None else pid
    doc: dict[str, Any] = {"exclusive": False, "holder": f"{host}-{pid}",
                           "time": time.time() - age}
    here = store_locks.this_process()
    doc.update({"host": host, "pid": pid, "start": here["start"] if start is None else start,
                "pidns": here["pidns"]})
    for key in keys:
        doc.pop(key)
    return doc


LOCKS: list[tuple[str, Callable[[], dict[str, Any]], bool]] = [
    # (what, the lock object, whether it still holds the store)
    ("this process", lambda: forge(), True),
    ("a dead process on this host", lambda: forge(pid=dead_pid()), False),
    ("a reused pid (start time differs)", lambda: forge(start="0:1"), False),
    ("another host's, fresh", lambda: forge(host="elsewhere", pid=1), True),
    ("another host's, 31 minutes old", lambda: forge(host="elsewhere", pid=1, age=31 * 60),
     False),
    ("an old version's (no pid, host or start)",
     lambda: forge(keys=("host", "pid", "start", "pidns")), True),
    ("this host, no start time recorded", lambda: forge(keys=("start",)), True),
    ("this host, no start time, dead", lambda: forge(pid=dead_pid(), keys=("start",)), False),
]


@pytest.mark.parametrize(("what", "make", "holds"), LOCKS, ids=[w for w, _, _ in LOCKS])
def test_which_lock_objects_hold_the_store(what: str, make: Callable[[], dict[str, Any]],
                                          holds: bool, tmp_path: Path) -> None:
    store = Store(f"memory://stuck-{tmp_path.name}")
    store.ensure_writable()
    store.backend.write_atomic(f"{store_locks.LOCK_DIR}/shared-x.json",
                               [json.dumps(make()).encode()])
    if holds:
        with pytest.raises(StoreBusyError):
            store.gc(timeout=0.3)
    else:
        report = store.gc(timeout=0.3)
        assert report.locks_removed == 1
        assert store.backend.listdir(store_locks.LOCK_DIR) == []


def test_a_local_store_lock_dies_with_its_process(tmp_path: Path) -> None:
    """Local stores lock with flock, which the kernel releases when the holder dies."""
    root = tmp_path / "store"
    Store(root).ensure_writable()
    code = (f"from ckpt_notebook.storage import Store\nimport time\n"
            f"with Store({str(root)!r}).lock():\n    print('HELD', flush=True)\n"
            "    time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=pythonpath_env())
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "HELD"
        with pytest.raises(StoreBusyError):
            Store(root).gc(timeout=0.5)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    Store(root).gc(timeout=5)


# --------------------------------------------------------------------------- name race


def race_for_a_name(store_of: Callable[[], Store], monkeypatch: pytest.MonkeyPatch,
                    ) -> tuple[list[str], list[BaseException]]:
    """Two Checkpointers save ``name="final"`` at once: both pass the up-front check (it
    is made to miss), then meet at a barrier just before their commits."""
    monkeypatch.setattr(Store, "exists", lambda self, ckpt_id: False)
    barrier = threading.Barrier(2, timeout=60)
    commit = Store.commit

    def commit_together(self: Store, *args: Any, **kwargs: Any) -> None:
        barrier.wait()
        commit(self, *args, **kwargs)

    monkeypatch.setattr(Store, "commit", commit_together)
    won: list[str] = []
    lost: list[BaseException] = []

    def save(seed: int) -> None:
        torch.manual_seed(seed)
        ckpt = Checkpointer(store_of(), model=torch.nn.Linear(4, 4), rng=False)
        try:
            won.append(ckpt.save(name="final", wait=True).id)
        except BaseException as err:
            lost.append(err)
        finally:
            ckpt.close()

    threads = [threading.Thread(target=save, args=(seed,)) for seed in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return won, lost


def assert_one_won_friendly(won: list[str], lost: list[BaseException], url: str) -> None:
    assert won == ["final"], lost
    assert len(lost) == 1 and isinstance(lost[0], CheckpointExistsError), lost
    message = str(lost[0])
    assert message.startswith(f"a checkpoint named 'final' already exists in {url}")
    assert "names are write-once" in message and "manifests/" not in message


def test_the_loser_of_a_name_race_is_told_the_name_is_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    Store(root).ensure_writable()
    won, lost = race_for_a_name(lambda: Store(root), monkeypatch)
    assert_one_won_friendly(won, lost, Store(root).url)


def test_the_loser_of_a_name_race_on_s3_is_told_the_name_is_taken(
        s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.make_bucket("race")
    s3_store(s3_server, bucket).ensure_writable()
    won, lost = race_for_a_name(lambda: s3_store(s3_server, bucket), monkeypatch)
    assert_one_won_friendly(won, lost, s3_server.url(bucket, "store"))
