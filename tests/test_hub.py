"""The Hugging Face Hub paths against huggingface_hub, pointed at a loopback stand-in.

``hf_hub.patch`` sets HF_ENDPOINT (and the constants huggingface_hub computed at import), so
the product code builds its own ``HfFileSystem()`` / ``HfApi()`` with no arguments, as a user's
code would, and still talks to 127.0.0.1.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import files_of
from servers import HubServer

import ckpt_notebook
from ckpt_notebook.errors import (
    CheckpointExistsError,
    CkptError,
    HubAuthError,
    HubError,
    HubNotFoundError,
)
from ckpt_notebook.manager.copying import copy
from ckpt_notebook.manager.hub import HubUpload, parse_hf_url, upload_to_hub
from ckpt_notebook.storage import Store


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def hub(hf_hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    hf_hub.patch(monkeypatch, tmp_path / "hf")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return hf_hub


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


REPO = {
    "config.json": b'{"hidden": 8}',
    "weights/model.safetensors": data(300_000, 1),
    "weights/extra/head.bin": data(5_000, 2),
    "README.md": b"# model\n",
}


# -- hf:// sources ------------------------------------------------------------------------------
def test_copy_whole_repo(hub: HubServer, store: Store, tmp_path: Path) -> None:
    hub.add_files("owner/repo", {k: v for k, v in REPO.items() if k != "weights/model.safetensors"})
    hub.add_file("owner/repo", "weights/model.safetensors", REPO["weights/model.safetensors"],
                 lfs=True)
    info = copy("hf://owner/repo", "from-hub", store=store)
    assert info.name == "from-hub" and info.kind == "files"
    assert info.logical_bytes == sum(len(v) for v in REPO.values())
    assert files_of(store, "from-hub", tmp_path / "out") == REPO
    assert store.verify("from-hub") == []
    assert hub.unhandled == []
    with pytest.raises(CheckpointExistsError):
        copy("hf://owner/repo", "from-hub", store=store)


def test_copy_subfolder_and_single_file(hub: HubServer, store: Store, tmp_path: Path) -> None:
    hub.add_files("owner/repo", REPO)
    copy("hf://owner/repo/weights", "weights", store=store)
    assert files_of(store, "weights", tmp_path / "w") == {
        "model.safetensors": REPO["weights/model.safetensors"],
        "extra/head.bin": REPO["weights/extra/head.bin"]}
    copy("hf://owner/repo/config.json", "config", store=store)
    assert files_of(store, "config", tmp_path / "c") == {"config.json": REPO["config.json"]}


def test_copy_at_revision(hub: HubServer, store: Store, tmp_path: Path) -> None:
    first = hub.add_files("owner/repo", {"w.bin": b"v1", "a.txt": b"a"})
    hub.create_branch("owner/repo", "stable", first)
    hub.add_files("owner/repo", {"w.bin": b"v2" * 100, "b.txt": b"b"})
    copy("hf://owner/repo@stable", "stable", store=store)
    copy("hf://owner/repo", "main", store=store)
    copy(f"hf://owner/repo@{first}", "by-sha", store=store)
    assert files_of(store, "stable", tmp_path / "s") == {"w.bin": b"v1", "a.txt": b"a"}
    assert files_of(store, "by-sha", tmp_path / "h") == {"w.bin": b"v1", "a.txt": b"a"}
    assert files_of(store, "main", tmp_path / "m") == {"w.bin": b"v2" * 100, "a.txt": b"a",
                                                       "b.txt": b"b"}
    # identical files are stored once
    assert store.info("by-sha").new_bytes == 0


def test_copy_datasets_repo(hub: HubServer, store: Store, tmp_path: Path) -> None:
    hub.add_files("owner/data", {"train/part-0.bin": b"rows"}, repo_type="dataset")
    copy("hf://datasets/owner/data", "data", store=store)
    assert files_of(store, "data", tmp_path / "d") == {"train/part-0.bin": b"rows"}


def test_lfs_pointer_served_is_refused(hub: HubServer, store: Store) -> None:
    weights = data(50_000, 3)
    hub.add_files("owner/repo", {"config.json": b"{}"})
    hub.add_file("owner/repo", "model.safetensors", weights, lfs=True)
    hub.serve_as_pointer("owner/repo", "model.safetensors")
    with pytest.raises(CkptError, match="Git LFS pointer") as err:
        copy("hf://owner/repo", "broken", store=store)
    assert "model.safetensors" in str(err.value) and "\n" not in str(err.value)
    assert not store.exists("broken")
    assert [i.id for i in store.list()] == []


def test_missing_repo_or_path(hub: HubServer, store: Store) -> None:
    hub.add_files("owner/repo", {"a.txt": b"a"})
    with pytest.raises(CkptError):
        copy("hf://owner/repo/nope.bin", "x", store=store)
    with pytest.raises((CkptError, OSError)):
        copy("hf://owner/no-such-repo", "y", store=store)
    assert store.list() == []


# -- uploads ------------------------------------------------------------------------------------
@pytest.fixture
def named(store: Store, tmp_path: Path) -> str:
    folder = tmp_path / "models"
    for rel, content in {"model.safetensors": data(20_000, 4), "config.json": b'{"a": 1}',
                         "logs/train.log": b"step 1\n", "optimizer.pt": data(3_000, 5)}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)
    copy(folder, "resnet-v1", store=store)
    return "resnet-v1"


def test_upload_named_checkpoint(hub: HubServer, store: Store, named: str) -> None:
    hub.create_repo("owner/up")
    report = upload_to_hub(named, "hf://owner/up", store=store)
    assert isinstance(report, HubUpload) and not report.dry_run
    assert report.commit == hub.head("owner/up")
    expected = {"model.safetensors": data(20_000, 4), "config.json": b'{"a": 1}',
                "logs/train.log": b"step 1\n", "optimizer.pt": data(3_000, 5)}
    assert hub.files("owner/up") == expected
    assert str(report).startswith("uploaded 4 file(s) to hf://owner/up")
    assert hub.unhandled == []


def test_upload_patterns_excludes_and_dry_run(hub: HubServer, store: Store, named: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    hub.create_repo("owner/up")
    before = hub.head("owner/up")
    with monkeypatch.context() as m:  # a dry run reads the manifest only: no blob is read
        m.setattr(store.blobs, "read", lambda *a, **k: pytest.fail("a dry run read a blob"))
        dry = upload_to_hub(named, "hf://owner/up", store=store,
                            patterns=["*.safetensors", "*.json"], dry_run=True)
    assert dry.dry_run and sorted(dry.files) == ["config.json", "model.safetensors"]
    assert str(dry).startswith("would upload 2 file(s)")
    assert hub.head("owner/up") == before  # nothing was sent
    upload_to_hub(named, "hf://owner/up", store=store, patterns=["*"], excludes=["logs/*",
                                                                               "*.pt"])
    assert sorted(hub.files("owner/up")) == ["config.json", "model.safetensors"]
    with pytest.raises(CkptError, match="nothing to upload"):
        upload_to_hub(named, "hf://owner/up", store=store, patterns=["*.onnx"])


def test_upload_training_state(hub: HubServer, store: Store) -> None:
    """A training-state checkpoint goes up as materialize writes it; the dry run's list (from
    the manifest) is exactly what a real upload sends."""
    from conftest import mlp

    from ckpt_notebook import Checkpointer

    ck = Checkpointer(store, model=mlp(), run="hub", async_save=False)
    ck.save(step=3, name="trained")
    hub.create_repo("owner/state")
    dry = upload_to_hub("trained", "hf://owner/state", store=store, dry_run=True)
    assert "model.safetensors" in dry.files and "manifest.json" in dry.files
    upload_to_hub("trained", "hf://owner/state", store=store)
    uploaded = hub.files("owner/state")
    assert sorted(uploaded) == sorted(dry.files)
    from safetensors.torch import load

    weights = load(uploaded["model.safetensors"])
    assert set(weights) == set(ck.objects["model"].state_dict())


def test_upload_folder_to_branch_and_subfolder(hub: HubServer, store: Store,
                                               tmp_path: Path) -> None:
    hub.add_files("owner/up", {"keep.txt": b"k"})
    hub.create_branch("owner/up", "dev")
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"A")
    (folder / "sub" / "b.bin").write_bytes(b"B")
    report = upload_to_hub(str(folder), "hf://owner/up/exports/v1@dev", store=store)
    assert str(report).startswith("uploaded 2 file(s) to hf://owner/up/exports/v1@dev")
    assert hub.files("owner/up", "dev") == {"keep.txt": b"k", "exports/v1/a.bin": b"A",
                                            "exports/v1/sub/b.bin": b"B"}
    assert hub.files("owner/up") == {"keep.txt": b"k"}  # main untouched
    hub.create_repo("owner/ds", repo_type="dataset")
    report = upload_to_hub(str(folder), "hf://datasets/owner/ds", store=store)
    assert str(report).startswith("uploaded 2 file(s) to hf://datasets/owner/ds ")
    assert hub.files("owner/ds", repo_type="dataset") == {"a.bin": b"A", "sub/b.bin": b"B"}


def test_upload_through_ui_copy(hub: HubServer, store: Store, named: str) -> None:
    hub.create_repo("owner/ui")
    report = ckpt_notebook.copy(named, to="hf://owner/ui", store=store, progress=False,
                                patterns=["*.json"])
    assert isinstance(report, HubUpload)
    assert hub.files("owner/ui") == {"config.json": b'{"a": 1}'}
    dry = ckpt_notebook.copy(named, to="hf://owner/ui", store=store, progress=False,
                             excludes=["*.json"], dry_run=True)
    assert isinstance(dry, HubUpload) and sorted(dry.files) == [
        "logs/train.log", "model.safetensors", "optimizer.pt"]
    assert sorted(hub.files("owner/ui")) == ["config.json"]


def test_upload_errors_are_one_line(hub: HubServer, store: Store, named: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CkptError, match="repo owner/missing does not exist") as err:
        upload_to_hub(named, "hf://owner/missing", store=store)
    assert "hf://owner/missing" in str(err.value) and "\n" not in str(err.value)
    hub.create_repo("owner/locked")
    with pytest.raises(CkptError, match="branch 'nope' does not exist") as err:
        upload_to_hub(named, "hf://owner/locked@nope", store=store)
    assert "\n" not in str(err.value)
    hub.tokens.clear()  # every token is now wrong
    with pytest.raises(CkptError, match="refused the token") as err:
        upload_to_hub(named, "hf://owner/locked", store=store)
    assert "hf://owner/locked" in str(err.value) and "\n" not in str(err.value)
    assert hub.files("owner/locked") == {}
    with pytest.raises(ValueError, match="hf://owner/repo"):
        upload_to_hub(named, "hf://justone", store=store)


def test_upload_errors_carry_their_facts(hub: HubServer, store: Store, named: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    with pytest.raises(HubNotFoundError) as missing:
        upload_to_hub(named, "hf://owner/missing", store=store)
    assert isinstance(missing.value, FileNotFoundError)
    assert isinstance(missing.value.__cause__, RepositoryNotFoundError)
    assert missing.value.url == "hf://owner/missing"
    assert missing.value.hint is not None and "hf repo create owner/missing" in missing.value.hint
    hub.create_repo("owner/locked")
    hub.tokens.clear()
    with pytest.raises(HubAuthError) as refused:
        upload_to_hub(named, "hf://owner/locked", store=store)
    assert isinstance(refused.value, PermissionError) and isinstance(refused.value, HubError)
    assert isinstance(refused.value.__cause__, HfHubHTTPError)
    assert refused.value.hint == "log in with `hf auth login` or set HF_TOKEN"


@pytest.mark.parametrize(("url", "expected"), [
    ("hf://me/repo", ("me/repo", None, "model", "")),
    ("hf://me/repo@dev", ("me/repo", "dev", "model", "")),
    ("hf://datasets/me/data/sub/dir@v1", ("me/data", "v1", "dataset", "sub/dir")),
    ("hf://spaces/me/app", ("me/app", None, "space", "")),
])
def test_parse_hf_url(url: str, expected: tuple[str, str | None, str, str]) -> None:
    assert parse_hf_url(url) == expected
