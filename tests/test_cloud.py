"""Google Cloud Storage (gcp-storage-emulator through gcsfs) and Azure Blob (Azurite through
adlfs) stores, tested like S3 against real servers on 127.0.0.1: save, restore, copy,
verify, gc, and two writers racing one name.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from conftest import mlp
from helpers.race import race_for_a_name
from servers_cloud import AzureServer, GCSServer, azure_server, gcs_server  # noqa: F401

from ckpt_notebook import Checkpointer
from ckpt_notebook.errors import CheckpointExistsError
from ckpt_notebook.manager.copying import copy
from ckpt_notebook.manager.materializing import materialize
from ckpt_notebook.storage import Store

Server = GCSServer | AzureServer


@pytest.fixture(params=["gcs", "azure"])
def cloud(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    name = {"gcs": "gcs_server", "azure": "azure_server"}[request.param]
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def store_on(server: Server, bucket: str) -> Store:
    return Store(server.url(bucket, "store"), **server.storage_options)


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def test_save_restore_verify_gc(cloud: Server) -> None:
    bucket = cloud.make_bucket("ckpt")
    model = mlp(1)
    ck = Checkpointer(cloud.url(bucket, "store"), storage_options=cloud.storage_options,
                      model=model)
    first = ck.save(step=1, wait=True)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ck.save(step=2, wait=True)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.zero_()
    report = ck.restore("latest")
    assert report.checkpoint.step == 2
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert ck.verify() == []
    again = store_on(cloud, bucket)  # another process, say
    assert [i.step for i in again.list()] == [1, 2]
    again.delete(first.id)
    gc = again.gc()
    assert gc.blobs_removed >= 1
    assert again.verify_all() == []


def test_copy_folder_in_and_checkpoint_out(cloud: Server, tmp_path: Path) -> None:
    bucket = cloud.make_bucket("copy")
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    (folder / "w.bin").write_bytes(data(50_000, 1))
    (folder / "sub" / "c.json").write_bytes(b"{}")
    store = store_on(cloud, bucket)
    copy(str(folder), "release", to=store)
    local = Store(tmp_path / "local")
    copy("release", "release", store=store, to=local)
    assert folder_files(materialize("release", tmp_path / "out", store=local)) == \
        folder_files(folder)
    with pytest.raises(CheckpointExistsError, match="release"):
        copy(str(folder), "release", to=store)


def test_two_threads_racing_one_name(cloud: Server, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    """Both writers pass the name check, then race their manifests: exactly one wins (the
    store's conditional write), and the name holds the winner's files."""
    if isinstance(cloud, GCSServer):
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "gcp-storage-emulator ignores ifGenerationMatch=0, the precondition gcsfs sends "
            "for mode='create' (real GCS honours it)")))
    bucket = cloud.make_bucket("race")
    folders = []
    for i in (0, 1):
        folder = tmp_path / f"f{i}"
        folder.mkdir()
        (folder / "w.bin").write_bytes(data(10_000, 10 + i))
        folders.append(folder)
    won, lost = race_for_a_name(lambda: store_on(cloud, bucket), folders)
    assert len(won) == 1 and len(lost) == 1, (won, lost)
    assert isinstance(lost[0], CheckpointExistsError) and "release" in str(lost[0])
    store = store_on(cloud, bucket)
    assert [i.id for i in store.list()] == ["release"]
    assert folder_files(materialize("release", tmp_path / "out", store=store)) == {
        "w.bin": data(10_000, 10 + won[0])}
