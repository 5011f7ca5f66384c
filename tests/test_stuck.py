"""Failures that must not leave a store stuck (issue 11, part 4).

- A writer killed mid-upload to S3 (moto on 127.0.0.1): its lock object no longer blocks gc,
  and gc aborts the multipart upload it left behind. A live holder still blocks gc.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import pythonpath_env
from servers import S3Server

from ckpt_notebook.errors import StoreBusyError
from ckpt_notebook.storage import Store
from ckpt_notebook.storage import locks as store_locks
from ckpt_notebook.storage.blobs import INLINE_LIMIT

HELPERS = Path(__file__).resolve().parent / "helpers"
MiB = 1 << 20


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
