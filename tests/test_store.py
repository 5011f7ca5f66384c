"""The store through one code path for every fsspec backend: local and in-memory."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import mlp

import ckpt_notebook as ckn
from ckpt_notebook.errors import CheckpointNotFoundError, StoreError
from ckpt_notebook.storage import Store


@pytest.fixture(params=["local", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return f"memory://ckpt-{uuid.uuid4().hex}"


def test_save_list_restore_roundtrip(store_url: str) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    ckpt = ckn.Checkpointer(store_url, model=model, optimizer=opt)
    a = ckpt.save(step=1, metrics={"val_loss": 0.5}, tags=["warmup"], wait=True)
    b = ckpt.save(step=2, metrics={"val_loss": 0.3}, wait=True)
    listed = Store(store_url).list()
    assert [i.id for i in listed] == [a.id, b.id]
    assert listed[0].tags == ("warmup",) and listed[1].parent == a.id
    assert ckpt.resolve("best.val_loss").id == b.id
    assert ckpt.resolve("best.val_loss:max").id == a.id
    assert ckpt.resolve("latest").id == b.id
    assert ckpt.resolve(b.id[:-2]).id == b.id
    with torch.no_grad():
        model[0].weight.zero_()
    ckpt.restore(a.id)
    assert model[0].weight.abs().sum() > 0
    assert ckpt.verify() == []


def test_index_is_rebuilt_when_missing_or_stale(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    ckpt = ckn.Checkpointer(url, model=mlp(), rng=False)
    ids = [ckpt.save(step=i, wait=True).id for i in range(3)]
    assert [i.id for i in Store(url).list()] == ids  # the first listing writes the index
    (tmp_path / "store" / "index.json").unlink()
    assert [i.id for i in Store(url).list()] == ids
    # A stale index (an entry whose manifest is gone, a manifest it lacks) is reconciled.
    (tmp_path / "store" / "manifests" / f"{ids[0]}.json").unlink()
    doc = json.loads((tmp_path / "store" / "index.json").read_text())
    del doc["entries"][ids[2]]
    (tmp_path / "store" / "index.json").write_text(json.dumps(doc))
    assert [i.id for i in Store(url).list()] == ids[1:]


def test_delete_then_gc_frees_blobs(store_url: str) -> None:
    model = mlp()
    ckpt = ckn.Checkpointer(store_url, model=model, rng=False)
    first = ckpt.save(wait=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1)
    ckpt.save(wait=True)
    store = Store(store_url)
    store.delete(first.id)
    report = store.gc()
    assert report.blobs_removed >= 1 and report.bytes_freed > 0
    assert ckpt.verify() == []
    with pytest.raises(CheckpointNotFoundError):
        store.delete(first.id)


def test_named_checkpoints_are_write_once(store_url: str) -> None:
    ckpt = ckn.Checkpointer(store_url, model=mlp(), rng=False)
    ckpt.save(name="baseline-v1", wait=True)
    with pytest.raises(FileExistsError, match="baseline-v1"):
        ckpt.save(name="baseline-v1", wait=True)
    with pytest.raises(ValueError, match="1-128 characters"):
        ckpt.save(name="../escape", wait=True)
    assert ckpt.resolve("baseline-v1").named


def test_bad_store_urls_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="nosuchproto"):
        Store("nosuchproto://bucket/x")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store(str(a_file))
    occupied = tmp_path / "mystuff"
    occupied.mkdir()
    (occupied / "notes.md").write_text("mine")
    with pytest.raises(StoreError, match="not a ckpt_notebook store"):
        ckn.Checkpointer(occupied, model=mlp()).save(wait=True)
    assert sorted(p.name for p in occupied.iterdir()) == ["notes.md"]


def test_store_env_var_sets_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKPT_NOTEBOOK_STORE", str(tmp_path / "from-env"))
    assert Store().url == str(tmp_path / "from-env")


def test_unknown_ref_lists_nearest(store_dir: Path) -> None:
    ckpt = ckn.Checkpointer(store_dir, model=mlp(), rng=False)
    info = ckpt.save(wait=True)
    with pytest.raises(CheckpointNotFoundError, match="nearest: " + info.id):
        ckpt.restore(info.id[:-1] + "x")
    with pytest.raises(CheckpointNotFoundError, match="no checkpoints"):
        ckn.Checkpointer(store_dir.parent / "empty", model=mlp()).restore()


def test_gc_forgets_the_marks_of_requests_taken_long_ago(tmp_path: Path) -> None:
    import os
    import time

    store = Store(str(tmp_path / "store"))
    store.ensure_writable()
    req = store.requests.put("save")
    store.requests.take("save")
    mark = tmp_path / "store" / "requests" / f"{req}.taken"
    assert store.requests.state(req) == "taken"
    store.gc()
    assert mark.exists()  # a fresh mark stays: the UI that asked may still be looking
    old = time.time() - 2 * 86400
    os.utime(mark, (old, old))
    store.gc()
    assert not mark.exists()


def test_a_request_being_taken_never_reads_as_expired(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """While a loop takes a request, a UI asking whether it was taken (the dashboard, the lab's
    notification) hears "pending" or "taken", never "expired": ``state()`` asked while the
    claim is writing the ``.taken`` mark (a local claim once removed the request first)."""
    import threading

    store = Store(str(tmp_path / "store"))
    store.ensure_writable()
    req = store.requests.put("save")
    real_write = store.backend.write_atomic
    marking, go_on = threading.Event(), threading.Event()

    def write_the_mark_later(rel: str, chunks: Any, **kw: Any) -> None:
        if rel.endswith(".taken"):
            marking.set()
            go_on.wait(30)
        real_write(rel, chunks, **kw)

    monkeypatch.setattr(store.backend, "write_atomic", write_the_mark_later)
    taker = threading.Thread(target=store.requests.take, args=("save",), daemon=True)
    taker.start()
    try:
        assert marking.wait(30)  # the loop is claiming the request now
        assert store.requests.state(req) in ("pending", "taken")
    finally:
        go_on.set()
        taker.join(30)
    assert store.requests.state(req) == "taken"
