"""A checkpoint whose files are in use (``materialize``, ``%checkpoint use``, ``ckpt get``)
is not deleted without ``--force``, and the refusal says who uses it; a use whose folder is
gone no longer counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import ckpt_notebook
from ckpt_notebook import Checkpointer
from ckpt_notebook.cli import main
from ckpt_notebook.errors import NeedsForceError
from ckpt_notebook.manager import maintenance
from ckpt_notebook.manager.materializing import use
from ckpt_notebook.storage import Store


@pytest.fixture
def store(tmp_path: Path) -> str:
    root = str(tmp_path / "store")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "w.bin").write_bytes(b"w" * 100)
    ckpt_notebook.copy(str(tmp_path / "models"), "resnet-v1", store=root)
    ck = Checkpointer(root, run="r", model=torch.nn.Linear(2, 2))
    ck.save(step=1, wait=True)
    ck.close()
    return root


def unnamed(store: str) -> str:
    return next(i.id for i in Store(store).list() if not i.named)


def test_cli_refuses_to_delete_a_materialized_checkpoint_and_names_the_folder(
        capsys: pytest.CaptureFixture[str], store: str, tmp_path: Path) -> None:
    out = tmp_path / "weights"
    ckpt_notebook.materialize("resnet-v1", out, store=store)
    assert main(["delete", "resnet-v1", "--store", store]) == 1
    err = capsys.readouterr().err
    assert "in use" in err and str(out) in err and "--force" in err
    assert main(["delete", "resnet-v1", "--force", "--store", store]) == 0
    assert not (Path(store) / "uses" / "resnet-v1").exists() or \
        not any((Path(store) / "uses" / "resnet-v1").iterdir())


def test_unnamed_checkpoint_in_use_needs_force_too(store: str, tmp_path: Path) -> None:
    ckpt_id = unnamed(store)
    ckpt_notebook.materialize(ckpt_id, tmp_path / "state", store=store)
    with pytest.raises(NeedsForceError, match="in use") as caught:
        maintenance.delete(Store(store), ckpt_id)
    assert str(tmp_path / "state") in str(caught.value)
    assert maintenance.delete(Store(store), ckpt_id, force=True).id == ckpt_id


def test_a_use_whose_folder_is_gone_does_not_count(store: str, tmp_path: Path) -> None:
    ckpt_id = unnamed(store)
    ckpt_notebook.materialize(ckpt_id, tmp_path / "state", store=store)
    shutil.rmtree(tmp_path / "state")
    assert maintenance.delete(Store(store), ckpt_id).id == ckpt_id


def test_use_cache_counts_as_a_user(store: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CKPT_NOTEBOOK_CHECKPOINT_PATH", raising=False)
    path = use("resnet-v1", store=store)
    with pytest.raises(NeedsForceError) as caught:
        maintenance.delete(Store(store), "resnet-v1")
    assert str(path) in str(caught.value)
