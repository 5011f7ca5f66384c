"""Storage backends: one interface, one class per strategy, chosen by the store's URL."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import S3Server

from ckpt_notebook.errors import CheckpointExistsError, StoreError
from ckpt_notebook.storage import Store
from ckpt_notebook.storage.backend import Backend, open_backend
from ckpt_notebook.storage.localfs import LocalBackend
from ckpt_notebook.storage.objectstore import ObjectStoreBackend

CLASSES = [LocalBackend, ObjectStoreBackend]
CAPABILITIES = {"workers": int, "stat_is_cheap": bool, "reads_in_place": bool,
                "renames_atomically": bool}


def test_each_url_gets_its_backend_class(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.make_bucket("choose")
    cases = [(str(tmp_path / "a"), {}, LocalBackend),
             (f"file://{tmp_path / 'b'}", {}, LocalBackend),
             (f"memory://ckpt-{uuid.uuid4().hex}", {}, ObjectStoreBackend),
             (s3_server.url(bucket, "store"), s3_server.storage_options, ObjectStoreBackend)]
    for url, options, cls in cases:
        assert type(open_backend(url, **options)) is cls, url
        assert type(Store(url, **options).backend) is cls, url
    assert open_backend(str(tmp_path / "a")).local_folder == str(tmp_path / "a")
    assert open_backend("memory://x").local_folder is None


def test_a_local_store_must_be_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StoreError, match="it is a file, not a folder"):
        Store(tmp_path / "file")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_each_class_speaks_the_interface(cls: type[Backend]) -> None:
    assert issubclass(cls, Backend) and not inspect.isabstract(cls)
    for name in sorted(Backend.__abstractmethods__):
        ours, theirs = getattr(cls, name), getattr(Backend, name)
        if isinstance(theirs, property):
            assert isinstance(ours, property), name
            continue
        assert (list(inspect.signature(ours).parameters)
                == list(inspect.signature(theirs).parameters)), name
    for name, kind in CAPABILITIES.items():
        assert isinstance(getattr(cls, name), kind), name


@pytest.fixture(params=["local", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = str(tmp_path / "store") if request.param == "local" else f"memory://b-{uuid.uuid4().hex}"
    yield open_backend(url)


def test_the_interface_behaves_alike(backend: Backend) -> None:
    """What the store relies on, on each backend: atomic and no-replace commits, listing,
    removal, the claim (one taker only), the lock."""
    backend.write_atomic("d/a", [b"one", memoryview(b"two")])
    assert backend.read_bytes("d/a") == b"onetwo" and backend.size("d/a") == 6
    assert bytes(backend.readinto("d/a", 6)) == b"onetwo"
    with backend.open_read("d/a") as f:
        assert f.read() == b"onetwo"
    backend.write_atomic("d/a", [b"new"])
    assert backend.read_bytes("d/a") == b"new"
    with pytest.raises(CheckpointExistsError):
        backend.write_atomic("d/a", [b"other"], exclusive=True)
    backend.write_atomic("d/b", [b"b"], exclusive=True)
    backend.sync_dirs(["d"])
    assert sorted(backend.listdir("d")) == ["a", "b"] and backend.listdir("none") == []
    assert sorted(backend.walk_files("d")) == ["d/a", "d/b"]
    backend.remove("d/a")
    backend.remove("d/a")  # removing what is gone is fine
    assert not backend.exists("d/a") and backend.exists("d/b")

    backend.write_atomic("req", [b"{}"])
    # each taker's mark differs (a retried PUT that finds its own bytes is its own commit)
    assert backend.claim("req", "req.taken", b"first")  # (two at once on S3: test_remote)
    assert not backend.claim("req", "req.taken", b"second")
    assert not backend.exists("req") and backend.exists("req.taken")

    with backend.lock(exclusive=True, timeout=5, busy="busy"):
        pass
    assert backend.remove_stale_locks() == 0
    assert backend.abort_abandoned_uploads("blobs") == 0
