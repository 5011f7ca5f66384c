"""A crafted store cannot touch anything outside itself, nor run code (issue 11, section 1).

Each case plants one hostile manifest beside a genuine checkpoint, then runs every verb a
user would (pin, unpin, delete, prune, gc, use, materialize/get, copy, export, verify, a
save with auto-pruning), locally and on a real S3 server (moto on 127.0.0.1). Whatever a
verb answers, the files outside the store stay exactly as they were, and the genuine
checkpoint still restores.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import pytest
import torch
from servers import S3Server

from ckpt_notebook import Checkpointer
from ckpt_notebook.cli import main
from ckpt_notebook.errors import CkptError
from ckpt_notebook.manager.materializing import materialize, use
from ckpt_notebook.storage import Store
from ckpt_notebook.storage.trust import seal
from ckpt_notebook.ui.copy_api import copy

OUTSIDE = "../../outside/victim"  # from <store>/pins/<id>: <parent of store>/outside/victim


@dataclass
class Place:
    """A store and the world around it: ``outside()`` snapshots what lies beyond the store."""

    url: str
    options: dict[str, Any]
    write: Callable[[str, bytes], None]  # a file below the store, as a hostile writer would
    outside: Callable[[], dict[str, str]]

    def store(self) -> Store:
        return Store(self.url, **self.options)

    def checkpointer(self, **kw: Any) -> Checkpointer:
        return Checkpointer(self.url, storage_options=self.options, **kw)


def _local(tmp_path: Path) -> Place:
    root = tmp_path / "world" / "store"
    outside = tmp_path / "world" / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "precious.txt").write_text("keep me")
    (outside / "victim.json").write_text("keep me too")

    def write(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def snapshot() -> dict[str, str]:
        out = {}
        for dirpath, _dirs, files in os.walk(tmp_path / "world"):
            for name in files:
                path = Path(dirpath) / name
                if root not in path.parents:
                    out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    return Place(str(root), {}, write, snapshot)


def _s3(server: S3Server) -> Place:
    bucket = server.make_bucket("trust")
    client = server.client()
    client.put_object(Bucket=bucket, Key="world/outside/victim/precious.txt", Body=b"keep me")
    client.put_object(Bucket=bucket, Key="world/outside/victim.json", Body=b"keep me too")

    def write(rel: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"world/store/{rel}", Body=data)

    def snapshot() -> dict[str, str]:
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                if not obj["Key"].startswith("world/store/"):
                    out[obj["Key"]] = obj["ETag"]
        return out

    return Place(server.url(bucket, "world/store"), dict(server.storage_options), write,
                 snapshot)


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    if request.param == "local":
        yield _local(tmp_path)
    else:
        yield _s3(request.getfixturevalue("s3_server"))


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


@pytest.fixture
def genuine(place: Place) -> dict[str, Any]:
    """A genuine training checkpoint and its manifest, from a real save."""
    model = _model()
    ck = place.checkpointer(model=model, run="genuine")
    info = ck.save(step=1, wait=True)
    ck.close()
    return {"id": info.id, "doc": place.store().manifest(info.id).to_json(),
            "weights": {k: v.clone() for k, v in model.state_dict().items()}}


def _plant(place: Place, file_id: str, doc: dict[str, Any]) -> None:
    """A hostile writer's manifest: well-formed, correctly sealed, lying where it matters."""
    place.write(f"manifests/{file_id}.json", seal(doc))


def _with_checkpoint(doc: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**doc, "checkpoint": {**doc["checkpoint"], **fields}}


def _every_verb(place: Place, ref: str, tmp_path: Path) -> list[tuple[str, Callable[[], Any]]]:
    store = place.store
    return [
        ("pin", lambda: _manager("pin")(store(), ref)),
        ("unpin", lambda: _manager("unpin")(store(), ref)),
        ("prune", lambda: _manager("prune")(store())),
        ("gc", lambda: store().gc()),
        ("verify", lambda: store().verify_all()),
        ("use", lambda: use(ref, store=store())),
        ("materialize", lambda: materialize(ref, tmp_path / "get-out", store=store())),
        ("copy", lambda: copy(ref, "copied", store=store(), progress=False)),
        ("export", lambda: _export(store(), ref, tmp_path / "export.safetensors")),
        ("restore", lambda: place.checkpointer(model=_model(1)).restore(ref)),
        ("delete", lambda: _manager("delete")(store(), ref, force=True)),  # last: it may work
    ]


def _manager(name: str) -> Callable[..., Any]:
    from ckpt_notebook.manager import maintenance

    return getattr(maintenance, name)  # type: ignore[no-any-return]


def _export(store: Store, ref: str, out: Path) -> Any:
    from ckpt_notebook.manager import export_weights, resolve_ref

    return export_weights(store, resolve_ref(store, ref), out)


def _run_all(place: Place, ref: str, tmp_path: Path) -> dict[str, str]:
    """Every verb on ``ref``: what each answered (``ok`` or its one-line error)."""
    answers = {}
    for verb, run in _every_verb(place, ref, tmp_path):
        try:
            run()
            answers[verb] = "ok"
        except CkptError as err:
            text = str(err)
            assert "\n" not in text, f"{verb}: a multi-line error: {text}"
            answers[verb] = text
    return answers


def _genuine_restores(place: Place, genuine: dict[str, Any]) -> None:
    model = _model(7)
    place.checkpointer(model=model).restore(genuine["id"])
    for key, value in genuine["weights"].items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.fixture
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("_cache")
def test_a_manifest_whose_id_leads_outside_touches_nothing_outside(
        place: Place, genuine: dict[str, Any], tmp_path: Path) -> None:
    """Was: ``ckpt pin evil`` overwrote a file outside the store, ``unpin`` deleted one,
    ``use`` wiped an outside folder, and auto-pruning deleted files outside."""
    before = place.outside()
    _plant(place, "evil", _with_checkpoint(genuine["doc"], id=OUTSIDE,
                                           created="2999-01-01T00:00:00.000000+00:00"))
    answers = _run_all(place, "evil", tmp_path)
    assert place.outside() == before
    for verb in ("pin", "unpin", "use", "materialize", "copy", "export", "restore"):
        assert "evil.json" in answers[verb] and "crafted" in answers[verb], (verb, answers)
    assert answers["delete"] == "ok"  # with force: it removes the crafted file, and only it
    assert place.store().unreadable() == []
    _plant(place, "evil", _with_checkpoint(genuine["doc"], id=OUTSIDE,
                                           created="2999-01-01T00:00:00.000000+00:00"))
    # a save that auto-prunes (keep_last=1) prunes the genuine one and collects its blobs
    ck = place.checkpointer(model=_model(2), keep_last=1)
    ck.save(step=2, wait=True)
    ck.close()
    assert place.outside() == before
    store = place.store()
    assert [u.id for u in store.unreadable()] == ["evil"]
    assert any("evil" in str(p) for p in store.audit())


@pytest.mark.usefixtures("_cache")
def test_a_pin_of_a_crafted_id_is_refused_and_delete_cleans_up(
        place: Place, genuine: dict[str, Any]) -> None:
    """Pin/unpin/delete build paths from an id: a crafted one never reaches the filesystem."""
    before = place.outside()
    store = place.store()
    for action in (store.pins.add, store.pins.remove, store.delete):
        with pytest.raises(CkptError, match="not a checkpoint id"):
            action(OUTSIDE)
    assert place.outside() == before


@pytest.mark.usefixtures("_cache")
def test_files_whose_paths_lead_outside_are_never_written(
        place: Place, genuine: dict[str, Any], tmp_path: Path) -> None:
    """A files checkpoint naming ``../../outside/victim``: get, use and copy refuse it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    copy(str(src), "files-v1", store=place.store(), progress=False)
    doc = place.store().manifest("files-v1").to_json()
    entry = doc["files"]["a.txt"]
    _plant(place, "files-evil", _with_checkpoint(
        {**doc, "files": {"../../../outside/victim/precious.txt": entry}},
        id="files-evil", name="files-evil"))
    before = place.outside()
    answers = _run_all(place, "files-evil", tmp_path)
    for verb in ("use", "materialize", "copy"):
        assert "leads outside" in answers[verb] or "could lead outside" in answers[verb], answers
    assert place.outside() == before
    assert not (tmp_path / "outside").exists()


@pytest.mark.usefixtures("_cache")
def test_blob_digests_that_are_paths_are_refused(
        place: Place, genuine: dict[str, Any], tmp_path: Path) -> None:
    doc = genuine["doc"]
    digest = next(iter(doc["blobs"]))
    tampered = json.loads(json.dumps(doc).replace(digest, "../../../outside/victim.json"))
    _plant(place, "blobby", _with_checkpoint(tampered, id="blobby"))
    before = place.outside()
    answers = _run_all(place, "blobby", tmp_path)
    assert place.outside() == before
    assert "not a blob digest" in answers["restore"], answers
    ck = place.checkpointer(model=_model(3), keep_last=1)
    ck.save(step=5, wait=True)  # auto-prune + gc beside the crafted manifest
    ck.close()
    assert place.outside() == before


class _Payload:
    """Unpickling this creates a file: proof that a pickle ran."""

    marker = ""

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.mark.usefixtures("_cache")
def test_smuggled_pickles_never_run(place: Place, genuine: dict[str, Any],
                                    tmp_path: Path) -> None:
    """Was: ``ckpt export`` ran a pickle smuggled into a model's state (restore refused it).
    Every reader of saved state decodes through one function that refuses pickles unless the
    caller opted in; this walks the readers of manifests."""
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    payload = pickle.dumps(_Payload())
    digest = blake3.blake3(payload).hexdigest()
    place.write(f"blobs/{digest[:2]}/{digest}", payload)
    doc = genuine["doc"]
    model = dict(doc["objects"]["model"])
    model["state"] = {**model["state"], "extra": {"__pickle__": 0}}
    model["pickles"] = [{"path": "extra", "blob": digest, "size": len(payload)}]
    smuggled = {**doc, "blobs": {**doc["blobs"], digest: len(payload)},
                "objects": {**doc["objects"], "model": model}}
    _plant(place, "smuggler", _with_checkpoint(smuggled, id="smuggler"))
    # a tag without a pickles list reaches the decoder too
    bare = dict(doc["objects"]["model"])
    bare["state"] = {**bare["state"], "extra": {"__pickle__": 0}}
    _plant(place, "bare", _with_checkpoint({**doc, "objects": {**doc["objects"], "model": bare}},
                                           id="bare"))
    for ref in ("smuggler", "bare"):
        answers = _run_all(place, ref, tmp_path)
        assert "pickle" in answers["export"], answers
        assert "pickle" in answers["restore"], answers
        assert not marker.exists(), f"a pickle ran while reading {ref}"
    if not place.options:  # the command line too, as a user runs it
        code = main(["export", "smuggler", str(tmp_path / "w.safetensors"), "--store", place.url])
        assert code == 1 and not marker.exists()
    _genuine_restores(place, genuine)


def test_a_ref_that_is_both_a_file_and_a_checkpoint_asks_which(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a checkpoint named ``model.safetensors`` was shadowed by a local file of that name:
    restore loaded the file."""
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    saved = _model(1)
    ck = Checkpointer(str(tmp_path / "store"), model=saved)
    ck.save(step=1, name="model.safetensors", wait=True)
    other = _model(2)
    save_file(other.state_dict(), "model.safetensors")
    target = _model(3)
    ck = Checkpointer(str(tmp_path / "store"), model=target)
    with pytest.raises(CkptError, match=r"both a checkpoint .* and a file .*'\./model\.safetensors'"
                                        r" for the file, or 'ckpt:model\.safetensors'"):
        ck.restore("model.safetensors")
    ck.restore("ckpt:model.safetensors")
    assert torch.equal(target[0].weight, saved[0].weight)
    ck.restore("./model.safetensors")
    assert torch.equal(target[0].weight, other[0].weight)
