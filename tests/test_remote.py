"""Stores on S3 (moto's server on 127.0.0.1, through s3fs), faults injected by a proxy in front
of it, and http(s):// sources from a loopback file server.

Every store here is opened as a user would: ``Store(url, **storage_options)`` or
``Checkpointer(url, storage_options=...)``; assertions look at the server itself (boto3).
"""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import mlp, pythonpath_env, wait_until
from helpers.race import race_for_a_name
from servers import FaultyProxy, HTTPFileServer, S3Server

from ckpt_notebook import Checkpointer
from ckpt_notebook.errors import (
    BackgroundSaveError,
    CheckpointExistsError,
    CkptError,
    StoreError,
)
from ckpt_notebook.manager.copying import copy
from ckpt_notebook.manager.materializing import materialize
from ckpt_notebook.manager.sources import HashCache
from ckpt_notebook.storage import Store
from ckpt_notebook.storage.backend import RetryPolicy

FAST = RetryPolicy(attempts=2, base=0.01, cap=0.02)  # failure tests fail in a second or two


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def s3_store(server: S3Server | FaultyProxy, bucket: str, path: str = "store",
             **extra: Any) -> Store:
    return Store(server.url(bucket, path), **{**server.storage_options, **extra})


def moto(proxy: FaultyProxy) -> S3Server:
    """The S3 server behind the proxy: for looking at what really landed."""
    assert proxy.s3 is not None
    return proxy.s3


def keys(server: S3Server, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object under ``prefix`` on the server: key -> size."""
    out = {}
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix)
    for page in pages:
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", ())})
    return out


FILES = {
    "model.safetensors": data(300_000, 1),
    "config.json": b'{"layers": 4}',
    "tokenizer/vocab.txt": data(20_000, 2),
    "tokenizer/copy-of-vocab.txt": data(20_000, 2),  # same bytes: one blob
    "empty.txt": b"",
    "run.sh": b"#!/bin/sh\necho hi\n",
}


def make_folder(root: Path, files: dict[str, bytes] = FILES) -> Path:
    """Write ``files`` with mtimes a minute old (so the hash cache may remember them)."""
    old = time.time() - 60
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if rel.endswith(".sh"):
            path.chmod(0o755)
        os.utime(path, (old, old))
    return root


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the Checkpointer on S3 -----------------------------------------------------------------------
def test_checkpointer_on_s3(s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket("ckpt")
    url = s3_server.url(bucket, "runs/a")
    model = mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = Checkpointer(url, storage_options=s3_server.storage_options, model=model,
                      optimizer=opt, run="s3")
    first = ck.save(step=1, metrics={"loss": 1.0}, wait=True)  # synchronous
    first_state = state_of(model)
    assert first.committed and first.new_bytes
    with torch.no_grad():
        model[0].weight.add_(1.0)
    pending = ck.save(step=2, metrics={"loss": 0.5})  # asynchronous
    second = ck.wait()
    assert second is not None and second.id == pending.id and second.committed
    assert second.new_bytes  # small tensors share a pack: the changed pack is new
    assert [i.id for i in ck.list()] == [first.id, second.id]
    assert keys(s3_server, bucket, "runs/a/manifests/").keys() == {
        f"runs/a/manifests/{i}{suffix}" for i in (first.id, second.id)
        for suffix in (".json", ".commit")}  # each manifest and its commit record

    # another process's view: a fresh Checkpointer (its own S3 client) lists and restores
    other_model = mlp(7)
    other = Checkpointer(url, storage_options=s3_server.storage_options, model=other_model,
                         optimizer=torch.optim.SGD(other_model.parameters(), lr=0.1),
                         run="s3")  # the same run: its best.loss is run s3's (issue 13)
    assert [i.id for i in other.list()] == [first.id, second.id]
    assert other.resolve("best.loss").id == second.id
    other.restore(first.id)
    assert same_state(state_of(other_model), first_state)
    assert ck.verify() == [] and other.verify(first.id) == []

    # named checkpoints are write-once on S3 too
    ck.save(step=3, name="best", wait=True)
    with pytest.raises(CheckpointExistsError):
        ck.save(step=4, name="best", wait=True)
    with pytest.raises(CheckpointExistsError):
        other.save(step=4, name="best", wait=True)

    # delete + gc: the blob only the first checkpoint held goes, the rest still verify
    blobs_before = keys(s3_server, bucket, "runs/a/blobs/")
    ck.delete(first.id)
    report = ck.gc()
    blobs_after = keys(s3_server, bucket, "runs/a/blobs/")
    assert report.blobs_removed >= 1 and report.bytes_freed > 0
    assert len(blobs_after) == len(blobs_before) - report.blobs_removed
    assert [i.id for i in other.list()] == [second.id, "best"]
    assert other.verify() == []
    other.restore(second.id)
    assert same_state(state_of(other_model), state_of(model))


def test_any_fsspec_url_is_a_store(tmp_path: Path) -> None:
    """The same code path on another fsspec backend (memory://): no S3-only shortcuts."""
    import uuid

    url = f"memory://ckpt-{uuid.uuid4().hex[:8]}/store"
    model = mlp(4)
    ck = Checkpointer(url, model=model, rng=False, async_save=False)
    first = ck.save(step=1)
    with pytest.raises(CheckpointExistsError):
        ck.save(step=2, name=first.id)
    copy(make_folder(tmp_path / "f"), "files", to=Store(url))
    assert [i.id for i in Store(url).list()] == [first.id, "files"]
    restored = mlp(8)
    Checkpointer(url, model=restored, rng=False).restore(first.id)
    assert same_state(state_of(restored), state_of(model))
    assert folder_files(materialize("files", tmp_path / "out", store=url)) == FILES
    Store(url).delete("files")
    assert ck.gc().blobs_removed == len(FILES) - 1
    assert ck.verify() == []


def test_verify_finds_a_corrupt_blob_on_the_server(s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket("corrupt")
    ck = Checkpointer(s3_server.url(bucket, "s"), storage_options=s3_server.storage_options,
                      model=mlp(), rng=False, async_save=False)
    info = ck.save(step=1)
    blob = max(keys(s3_server, bucket, "s/blobs/").items(), key=lambda kv: kv[1])[0]
    s3_server.client().put_object(Bucket=bucket, Key=blob, Body=b"not the tensor bytes")
    problems = ck.verify(info.id)
    assert len(problems) == 1 and problems[0].blob == blob.rsplit("/", 1)[1]
    assert "truncated" in problems[0].problem or "corrupt" in problems[0].problem


# -- named checkpoints: racing writers -------------------------------------------------------------
def test_two_threads_racing_one_name(s3_server: S3Server, tmp_path: Path) -> None:
    """Both writers pass the name check, then race their manifests: exactly one wins (S3's
    conditional PUT), and the name holds the winner's files."""
    bucket = s3_server.make_bucket("race")
    folders = [make_folder(tmp_path / f"f{i}", {"w.bin": data(10_000, 10 + i)}) for i in (0, 1)]
    won, lost = race_for_a_name(lambda: s3_store(s3_server, bucket), folders)
    assert len(won) == 1 and len(lost) == 1, (won, lost)
    assert isinstance(lost[0], CheckpointExistsError) and "release" in str(lost[0])
    store = s3_store(s3_server, bucket)
    assert [i.id for i in store.list()] == ["release"]
    assert folder_files(materialize("release", tmp_path / "out", store=store)) == {
        "w.bin": data(10_000, 10 + won[0])}


RACER = textwrap.dedent("""
    import json, os, sys, time
    from ckpt_notebook.manager.copying import copy
    from ckpt_notebook.storage import Store
    from ckpt_notebook.errors import CheckpointExistsError

    url, options, folder, gate, me = sys.argv[1:]
    store = Store(url, **json.loads(options))
    commit = store.commit

    def racing_commit(*args, **kwargs):  # wait until the other process is here too
        open(os.path.join(gate, me), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(gate)) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        commit(*args, **kwargs)

    store.commit = racing_commit
    try:
        copy(folder, "release", to=store)
    except CheckpointExistsError as err:
        print("lost:", err)
        sys.exit(3)
    print("won")
""")


def test_two_processes_racing_one_name(s3_server: S3Server, tmp_path: Path) -> None:
    import json

    bucket = s3_server.make_bucket("prace")
    url = s3_server.url(bucket, "store")
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = []
    for i in (0, 1):
        folder = make_folder(tmp_path / f"f{i}", {"w.bin": data(5_000, 20 + i)})
        procs.append(subprocess.Popen(
            [sys.executable, "-c", RACER, url, json.dumps(s3_server.storage_options),
             str(folder), str(gate), str(i)],
            env={**pythonpath_env(), "XDG_CACHE_HOME": str(tmp_path / f"cache{i}")},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(120), *p.communicate()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 3], results
    winner = next(i for i, r in enumerate(results) if r[0] == 0)
    assert "already exists" in next(r[1] for r in results if r[0] == 3)
    store = s3_store(s3_server, bucket)
    assert [i.id for i in store.list()] == ["release"]
    assert folder_files(materialize("release", tmp_path / "out", store=store)) == {
        "w.bin": data(5_000, 20 + winner)}


def test_two_writers_create_one_store(s3_server: S3Server, tmp_path: Path) -> None:
    """Two writers open a new store at once: the second checked for ckpt-store.json just
    before the first wrote it, and must accept the store it then finds. Afterwards the
    bucket holds one store, marked once, with what both wrote."""
    import json

    from ckpt_notebook.storage import manifest
    from ckpt_notebook.storage.store import STORE_FILE, STORE_FORMAT

    bucket = s3_server.make_bucket("create")
    first, second = s3_store(s3_server, bucket), s3_store(s3_server, bucket)
    first.ensure_writable()
    real_exists = second.backend.exists
    calls = []

    def exists_before_the_first_write(rel: str) -> bool:
        calls.append(rel)
        return False if len(calls) == 1 else real_exists(rel)

    second.backend.exists = exists_before_the_first_write  # type: ignore[method-assign]
    second.ensure_writable()
    assert calls[0] == STORE_FILE  # the second writer did see no store, and made one
    assert list(keys(s3_server, bucket, "store/")) == [f"store/{STORE_FILE}"]
    marker = s3_server.client().get_object(Bucket=bucket, Key=f"store/{STORE_FILE}")
    doc = json.loads(marker["Body"].read())
    assert doc.keys() == {"format", "version", "created"}
    assert (doc["format"], doc["version"]) == (STORE_FORMAT, manifest.VERSION)

    written = {"from-first": {"a.bin": data(3_000, 1)}, "from-second": {"b.bin": data(3_000, 2)}}
    for writer, (name, files) in zip((first, second), written.items(), strict=True):
        copy(make_folder(tmp_path / name, files), name, to=writer)
    store = s3_store(s3_server, bucket)  # a third writer, opened afterwards: the same store
    assert {i.id for i in store.list()} == set(written)
    for name, files in written.items():
        assert store.verify(name) == []
        assert folder_files(materialize(name, tmp_path / "out" / name, store=store)) == files


def test_a_long_lived_store_sees_other_writers(s3_server: S3Server, tmp_path: Path) -> None:
    """A Store keeps no stale listing: what another writer commits or deletes after this one
    listed is seen at once (s3fs caches listings and even ``cat_file`` consults them)."""
    bucket = s3_server.make_bucket("fresh")
    reader, writer = s3_store(s3_server, bucket), s3_store(s3_server, bucket)
    copy(make_folder(tmp_path / "a", {"a.bin": b"a"}), "a", to=writer)
    assert [i.id for i in reader.list()] == ["a"]  # the reader has listed manifests/ now
    copy(make_folder(tmp_path / "b", {"b.bin": b"b"}), "b", to=writer)
    assert reader.exists("b") and reader.info("b").name == "b"
    assert reader.verify("b") == []
    writer.delete("a")
    assert not reader.exists("a")
    assert [i.id for i in reader.list()] == ["b"]


# -- locks on S3: gc never removes a blob a save is about to reference ---------------------------
def test_gc_waits_for_a_save_that_reuses_an_unreferenced_blob(s3_server: S3Server) -> None:
    """The race a lock closes: a save finds blob X in the store (its old checkpoint was
    deleted, so X is unreferenced) and will name it in its manifest; gc must not remove X
    in between."""
    bucket = s3_server.make_bucket("gc-race")
    model = mlp(3)
    saver = Checkpointer(s3_store(s3_server, bucket), model=model, rng=False, async_save=False)
    old = saver.save(step=1)
    saver.delete(old.id, force=True)  # every blob of step 1 is now unreferenced
    in_commit, go_on = threading.Event(), threading.Event()
    commit = saver.store.commit

    def slow_commit(*args: Any, **kwargs: Any) -> None:
        in_commit.set()  # the blobs are checked: all there
        assert go_on.wait(30)
        commit(*args, **kwargs)

    saver.store.commit = slow_commit  # type: ignore[method-assign]
    saving = threading.Thread(target=lambda: saver.save(step=2))  # the same bytes again
    saving.start()
    assert in_commit.wait(30)
    collector = s3_store(s3_server, bucket)  # another process, say
    reports: list[Any] = []
    gc = threading.Thread(target=lambda: reports.append(collector.gc()))
    gc.start()
    gc.join(1.5)
    assert gc.is_alive()  # waiting for the save's lock
    go_on.set()
    saving.join(30)
    gc.join(30)
    assert reports and reports[0].blobs_removed == 0
    new = collector.list()[-1]
    assert new.step == 2 and collector.verify(new.id) == []


def test_a_holder_blocks_gc_and_a_dead_holders_lock_is_ignored(s3_server: S3Server,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import json

    from ckpt_notebook.errors import StoreBusyError
    from ckpt_notebook.storage import locks

    bucket = s3_server.make_bucket("locks")
    store = s3_store(s3_server, bucket)
    Checkpointer(store, model=mlp(1), rng=False).save(step=1, wait=True)
    other = s3_store(s3_server, bucket)
    with store.lock():  # a save in progress
        with pytest.raises(StoreBusyError) as err, other.lock(exclusive=True, timeout=0.5):
            pass
        assert "busy" in str(err.value) and "\n" not in str(err.value)
        with other.lock(timeout=0.5):  # savers share
            pass
    # a gc that died an hour ago left its lock behind: nobody waits for it, gc removes it
    dead = {"exclusive": True, "holder": "elsewhere-1", "time": time.time() - 3600}
    stale = f"store/{locks.LOCK_DIR}/exclusive-elsewhere-1-0123456789ab.json"
    s3_server.client().put_object(Bucket=bucket, Key=stale, Body=json.dumps(dead).encode())
    Checkpointer(store, model=mlp(2), rng=False).save(step=2, wait=True)
    report = other.gc()
    assert report.locks_removed == 1 and "1 stale lock" in str(report)
    assert keys(s3_server, bucket, f"store/{locks.LOCK_DIR}/") == {}
    # a long save keeps its lock fresh
    monkeypatch.setattr(locks, "REFRESH_S", 0.2)
    with store.lock():
        [key] = keys(s3_server, bucket, f"store/{locks.LOCK_DIR}/")

        def written_at() -> float:
            return float(json.loads(store.backend.read_bytes(key[len("store/"):]))["time"])

        first = written_at()
        assert wait_until(lambda: written_at() > first, timeout=30)  # rewritten while held


# -- copy to and from S3 ---------------------------------------------------------------------------
def writes(proxy: FaultyProxy, since: int) -> list[str]:
    """Paths of the write requests (PUT/POST) the proxy forwarded since log entry ``since``,
    leaving out the listing cache (index.json), which a listing may refresh at any time, and
    the lock object every writer puts while it holds the store."""
    paths = [r.path.split("?")[0] for r in proxy.log[since:] if r.method in ("PUT", "POST")]
    return [p for p in paths if not p.endswith("/index.json") and "/locks/" not in p]


def test_copy_folder_to_s3_then_recopy_moves_only_the_manifest(faulty_s3: FaultyProxy,
                                                               tmp_path: Path) -> None:
    bucket = faulty_s3.make_bucket("copy")  # a healthy proxy: it only counts requests
    store = s3_store(faulty_s3, bucket)
    folder = make_folder(tmp_path / "models")
    unique = sum(len(v) for k, v in FILES.items() if k != "tokenizer/copy-of-vocab.txt")

    first = copy(folder, "v1", to=store)
    assert first.logical_bytes == sum(len(v) for v in FILES.values())
    assert first.new_bytes == unique
    blob_keys = keys(moto(faulty_s3), bucket, "store/blobs/")
    assert len(blob_keys) == len(FILES) - 1

    # again, unchanged: the hash cache knows every file, the store has every blob
    mark = len(faulty_s3.log)
    again = copy(folder, "v2", to=store)
    assert again.new_bytes == 0
    commit = [f"/{bucket}/store/manifests/v2.json", f"/{bucket}/store/manifests/v2.commit"]
    assert writes(faulty_s3, mark) == commit  # the manifest and its commit record

    # again with no hash cache: every file is read and hashed, still nothing but the manifest
    mark = len(faulty_s3.log)
    cold = copy(folder, "v3", to=store, hash_cache=HashCache(tmp_path / "cold.sqlite3"))
    assert cold.new_bytes == 0
    assert writes(faulty_s3, mark) == [f"/{bucket}/store/manifests/v3.json",
                                       f"/{bucket}/store/manifests/v3.commit"]

    # one file changed: its blob and the manifest travel
    changed = make_folder(folder, {"config.json": b'{"layers": 8}'})
    mark = len(faulty_s3.log)
    third = copy(changed, "v4", to=store)
    assert third.new_bytes == len(b'{"layers": 8}')
    sent = writes(faulty_s3, mark)
    assert len(sent) == 3 and sent[-2].endswith("/manifests/v4.json")
    assert "/blobs/" in sent[0] and sent[-1].endswith("/manifests/v4.commit")

    out = materialize("v1", tmp_path / "out", store=store)
    assert folder_files(out) == FILES
    assert os.stat(out / "run.sh").st_mode & stat.S_IXUSR
    assert store.verify("v1") == [] and store.verify("v4") == []
    assert [i.id for i in s3_store(moto(faulty_s3), bucket).list()] == ["v1", "v2", "v3", "v4"]


def test_copy_checkpoints_between_local_and_s3(s3_server: S3Server, tmp_path: Path) -> None:
    local = Store(tmp_path / "local")
    model = mlp(3)
    ck = Checkpointer(local, model=model, run="here", async_save=False)
    saved = ck.save(step=5, metrics={"acc": 0.9})
    bucket = s3_server.make_bucket("between")
    remote = s3_store(s3_server, bucket)

    up = copy(saved.id, "exported", store=local, to=remote)
    assert up.parent == saved.id and up.step == 5 and up.new_bytes
    assert remote.verify("exported") == []
    assert remote.manifest("exported").blobs == local.manifest(saved.id).blobs
    again = copy(saved.id, "exported-again", store=local, to=remote)
    assert again.new_bytes == 0  # every blob is already there
    with pytest.raises(CheckpointExistsError):
        copy(saved.id, "exported", store=local, to=remote)

    restored = mlp(11)
    Checkpointer(remote, model=restored).restore("exported")
    assert same_state(state_of(restored), state_of(model))

    back = copy("exported", "round-trip", store=remote, to=local)
    assert back.new_bytes == 0  # the local store had every blob
    fresh = Store(tmp_path / "fresh")
    down = copy("exported", "downloaded", store=remote, to=fresh)
    assert down.new_bytes == up.new_bytes
    assert fresh.verify("downloaded") == [] and local.verify("round-trip") == []

    # a files checkpoint, both ways, and materialize straight from S3
    copy(make_folder(tmp_path / "folder"), "files", store=local)
    copy("files", "files", store=local, to=remote)
    assert folder_files(materialize("files", tmp_path / "m", store=remote)) == FILES


# -- faults ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["500", "drop"])
def test_save_and_copy_survive_flaky_s3(faulty_s3: FaultyProxy, tmp_path: Path,
                                        mode: str) -> None:
    """30% of requests fail (never more than twice in a row for one request). botocore's own
    retries are off (max_attempts=1), so our RetryPolicy is what gets the work through.

    9 attempts, because checking for a missing key is two requests on s3fs (a HEAD, then a
    listing for the "directory" case), each of which may fail twice in a row: HEAD fails
    twice, then the listing, HEAD twice again, the listing again (its second in a row), HEAD
    twice more; only the 9th attempt surely gets through."""
    bucket = faulty_s3.make_bucket(f"flaky{mode}")
    store = Store(faulty_s3.url(bucket, "store"), **faulty_s3.options(max_attempts=1),
                  retry=RetryPolicy(attempts=9, base=0.01, cap=0.05))
    faulty_s3.fail_rate, faulty_s3.mode, faulty_s3.max_consecutive = 0.3, mode, 2
    model = mlp(5)
    ck = Checkpointer(store, model=model, rng=False, async_save=False)
    saved = ck.save(step=1)
    copied = copy(make_folder(tmp_path / "folder"), "files", to=store)
    async_ck = Checkpointer(store, model=model, rng=False)
    async_ck.save(step=2)
    later = async_ck.wait()
    assert later is not None
    faulty_s3.heal()
    assert faulty_s3.faults > 0
    clean = s3_store(moto(faulty_s3), bucket)
    assert {i.id for i in clean.list()} == {saved.id, copied.id, later.id}
    for ckpt_id in (saved.id, copied.id, later.id):
        assert clean.verify(ckpt_id) == []
    assert folder_files(materialize("files", tmp_path / "out", store=clean)) == FILES


def test_commit_whose_answer_was_lost(faulty_s3: FaultyProxy, tmp_path: Path) -> None:
    """The manifest PUT lands but its answer is lost: the retry (a conditional PUT) meets the
    manifest and recognizes it as its own, so the copy succeeds, once."""
    bucket = faulty_s3.make_bucket("lost")
    store = Store(faulty_s3.url(bucket, "store"), **faulty_s3.options(max_attempts=1),
                  retry=FAST)
    faulty_s3.mode = "drop_after"
    faulty_s3.match = lambda m, p: m == "PUT" and "/manifests/" in p
    faulty_s3.fail_next(1)
    info = copy(make_folder(tmp_path / "f"), "landed", to=store)
    outcomes = [r.outcome for r in faulty_s3.log if "/manifests/landed.json" in r.path
                and r.method == "PUT"]
    assert outcomes == ["fault drop_after", "forwarded 412"]
    assert [i.id for i in s3_store(moto(faulty_s3), bucket).list()] == [info.id]


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def test_s3_down_fails_clearly_and_commits_nothing(faulty_s3: FaultyProxy,
                                                   tmp_path: Path) -> None:
    bucket = faulty_s3.make_bucket("down")
    store = Store(faulty_s3.url(bucket, "store"), **faulty_s3.options(max_attempts=1),
                  retry=FAST)
    folder = make_folder(tmp_path / "folder")
    faulty_s3.fail_all, faulty_s3.mode = True, "500"
    with pytest.raises(StoreError) as err:
        copy(folder, "doomed", to=store)
    text = one_line(err.value)
    assert f"s3://{bucket}/store/" in text and "failed after 2 attempts" in text
    assert "InternalError" in text or "500" in text or "Internal" in text
    faulty_s3.heal()
    assert keys(moto(faulty_s3), bucket) == {}


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_failed_blob_uploads_commit_nothing(faulty_s3: FaultyProxy, tmp_path: Path,
                                            mode: str) -> None:
    bucket = faulty_s3.make_bucket(f"blobs{mode}")
    store = Store(faulty_s3.url(bucket, "store"), **faulty_s3.options(max_attempts=1),
                  retry=FAST)
    copy(make_folder(tmp_path / "before", {"a.bin": b"a"}), "before", to=store)
    folder = make_folder(tmp_path / "folder")
    with (faulty_s3.failing(1.0, mode, match=lambda m, p: m == "PUT" and "/blobs/" in p),
          pytest.raises(StoreError) as err):
        copy(folder, "doomed", to=store)
    text = one_line(err.value)
    assert f"s3://{bucket}/store/blobs/" in text and "failed after 2 attempts" in text
    clean = s3_store(moto(faulty_s3), bucket)
    assert [i.id for i in clean.list()] == ["before"]
    assert sorted(keys(moto(faulty_s3), bucket, "store/manifests/")) == [
        "store/manifests/before.commit", "store/manifests/before.json"]
    # healed, the same copy goes through and verifies
    copy(folder, "doomed", to=store)
    assert clean.verify("doomed") == []


def test_a_dead_store_fails_fast(faulty_s3: FaultyProxy, tmp_path: Path) -> None:
    """The first blob that fails after its retries stops the copy: the blobs not yet started
    are not tried (each would cost its own retries against a dead server)."""
    bucket = faulty_s3.make_bucket("fast")
    store = Store(faulty_s3.url(bucket, "store"), **faulty_s3.options(max_attempts=1),
                  retry=FAST)
    folder = make_folder(tmp_path / "many", {f"f{i:03d}.bin": data(100, i) for i in range(200)})
    with (faulty_s3.failing(1.0, "500", match=lambda m, p: m == "PUT" and "/blobs/" in p),
          pytest.raises(StoreError)):
        copy(folder, "doomed", to=store)
    tried = {r.path for r in faulty_s3.log if r.method == "PUT" and "/blobs/" in r.path}
    assert 0 < len(tried) < 100, len(tried)  # at most the workers in flight, not all 200


def test_failed_saves_commit_nothing(faulty_s3: FaultyProxy) -> None:
    bucket = faulty_s3.make_bucket("saves")
    store = Store(faulty_s3.url(bucket, "store"), **faulty_s3.options(max_attempts=1),
                  retry=FAST)
    model = mlp(2)
    ck = Checkpointer(store, model=model, rng=False, async_save=False)
    ok = ck.save(step=1)
    with torch.no_grad():
        model[0].weight.mul_(2)
    def blob_puts(method: str, path: str) -> bool:
        return method == "PUT" and "/blobs/" in path

    with faulty_s3.failing(1.0, "500", match=blob_puts):
        with pytest.raises(StoreError) as err:
            ck.save(step=2)
        assert "/store/blobs/" in one_line(err.value)
        background = Checkpointer(store, model=model, rng=False)
        background.save(step=3)
        with pytest.raises(BackgroundSaveError) as bg:
            background.wait()
        assert "failed after 2 attempts" in one_line(bg.value)
    # the manifest PUT itself fails: blobs landed, the checkpoint did not
    with faulty_s3.failing(1.0, "500", match=lambda m, p: m == "PUT" and "/manifests/" in p):
        with pytest.raises(StoreError) as err:
            ck.save(step=4)
        assert "/store/manifests/" in one_line(err.value)
    clean = s3_store(moto(faulty_s3), bucket)
    assert [i.id for i in clean.list()] == [ok.id]
    report = clean.gc()  # the failed saves' blobs are unreferenced leftovers
    assert report.blobs_removed >= 1
    assert clean.verify(ok.id) == []


def test_missing_bucket_and_dead_endpoint(s3_server: S3Server, tmp_path: Path) -> None:
    store = Store("s3://no-such-bucket-here/store", **s3_server.storage_options)
    assert store.list() == []
    with pytest.raises(StoreError, match="s3://no-such-bucket-here/store/") as err:
        copy(make_folder(tmp_path / "f", {"a": b"a"}), "x", to=store)
    assert "bucket" in one_line(err.value)
    dead = Store("s3://bucket/store", retry=FAST, **{
        **s3_server.options(max_attempts=1),
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"}})
    with pytest.raises(StoreError, match=r"s3://bucket/store/\S+ failed after 2 attempts") as err:
        dead.list()
    one_line(err.value)


# -- http(s):// sources ----------------------------------------------------------------------------
def test_copy_from_http_file_and_archives(http_files: HTTPFileServer, tmp_path: Path,
                                          s3_server: S3Server) -> None:
    store = Store(tmp_path / "store")
    weights = data(200_000, 7)
    http_files.write("models/w.bin", weights)
    copy(http_files.url("models/w.bin"), "single", store=store)
    assert folder_files(materialize("single", tmp_path / "single", store=store)) == {
        "w.bin": weights}

    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w:gz") as tf:
        for rel, content in FILES.items():
            member = tarfile.TarInfo(f"bundle/{rel}")
            member.size = len(content)
            tf.addfile(member, io.BytesIO(content))
    http_files.write("dl/bundle.tar.gz", tar.getvalue())
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        for rel, content in FILES.items():
            zf.writestr(rel, content)
    http_files.write("dl/bundle.zip", zipped.getvalue())

    copy(http_files.url("dl/bundle.tar.gz"), "from-tar", store=store)
    assert folder_files(materialize("from-tar", tmp_path / "tar", store=store)) == {
        f"bundle/{k}": v for k, v in FILES.items()}
    # straight into S3
    remote = s3_store(s3_server, s3_server.make_bucket("http"))
    copy(http_files.url("dl/bundle.zip"), "from-zip", to=remote)
    assert folder_files(materialize("from-zip", tmp_path / "zip", store=remote)) == FILES
    assert remote.verify("from-zip") == []


def test_http_lfs_pointer_is_refused(http_files: HTTPFileServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    http_files.write_lfs_pointer("models/model.safetensors", data(1_000_000, 8))
    with pytest.raises(CkptError, match="Git LFS pointer") as err:
        copy(http_files.url("models/model.safetensors"), "pointer", store=store)
    assert "model.safetensors" in one_line(err.value)
    assert not store.exists("pointer")


def test_http_missing_file(http_files: HTTPFileServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises((CkptError, FileNotFoundError)) as err:
        copy(http_files.url("models/nope.bin"), "nope", store=store)
    assert "nope.bin" in one_line(err.value)
    assert store.list() == []


def test_a_save_request_on_s3_goes_to_one_taker_only(s3_server: S3Server) -> None:
    """Two training loops on one object store both see a request and claim it at the same
    moment: exactly one gets it (was: both did, since a delete on S3 always 'succeeds')."""
    bucket = s3_server.make_bucket("claims")
    asked = s3_store(s3_server, bucket)
    asked.ensure_writable()
    req = asked.requests.put("save")
    barrier = threading.Barrier(2, timeout=30)
    got: dict[int, list[str]] = {}

    def loop(i: int) -> None:
        queue = s3_store(s3_server, bucket).requests  # each loop its own client
        claim = queue._claim

        def together(*args: Any) -> bool:
            barrier.wait()  # both have read the request: now both claim it
            return claim(*args)

        queue._claim = together  # type: ignore[method-assign]
        got[i] = [r["id"] for r in queue.take("save")]

    threads = [threading.Thread(target=loop, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got[0] + got[1]) == [req], got
    assert asked.requests.state(req) == "taken"
