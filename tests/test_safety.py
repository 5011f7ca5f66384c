"""Safety: restore never unpickles untrusted data, and what cannot be saved safely is refused.

- A malicious pickle ``.pt`` given as REF is refused with :class:`UnsafeFileError` and its
  payload never runs; plain ``.pt`` state dicts and ``.safetensors`` files load (weights only).
- A value that needs pickle without ``allow_pickle`` fails naming the variable, and nothing
  is written; with ``allow_pickle`` it saves, and restoring it needs ``allow_pickle`` too.
- A bad store URL gives :class:`StoreError`; an unsupported object a clear
  :class:`CaptureError`, with nothing written.
"""

from __future__ import annotations

import os
import pickle
import shlex
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ckpt_notebook.errors import (  # noqa: E402
    BackgroundSaveError,
    CaptureError,
    PickleRequiredError,
    RestoreError,
    StoreError,
    UnsafeFileError,
)
from ckpt_notebook.manager import Checkpointer  # noqa: E402
from ckpt_notebook.storage import Store  # noqa: E402


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class OpenPayload:
    """Unpickling this calls ``open(marker, 'w')``, creating the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


class Config:
    """A plain object: only pickle can save it."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and other.lr == self.lr

    __hash__ = None  # type: ignore[assignment]


def small_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def frozen(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def files_under(path: Path) -> list[str]:
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


# -- malicious and plain weight files as REF ---------------------------------------------------
def write_malicious(path: Path, marker: Path, how: str) -> None:
    weight = torch.zeros(4, 8)
    if how == "zip":
        torch.save(Payload(marker), path)
    elif how == "zip-inside-state-dict":
        torch.save({"0.weight": weight, "0.bias": Payload(marker)}, path)
    elif how == "zip-wrapped-state-dict":
        torch.save({"state_dict": {"0.weight": weight}, "hook": OpenPayload(marker)}, path)
    elif how == "legacy":
        torch.save({"0.weight": weight, "x": Payload(marker)}, path,
                   _use_new_zipfile_serialization=False)
    elif how == "raw-pickle":
        path.write_bytes(pickle.dumps(OpenPayload(marker), protocol=2))
    else:
        raise AssertionError(how)


MALICIOUS = ["zip", "zip-inside-state-dict", "zip-wrapped-state-dict", "legacy", "raw-pickle"]


@pytest.mark.parametrize("how", MALICIOUS)
def test_payload_is_real(tmp_path: Path, how: str) -> None:
    """The control: unpickling these files the unsafe way does run the payload."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    write_malicious(path, marker, how)
    if how == "raw-pickle":
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
@pytest.mark.parametrize("how", MALICIOUS)
def test_malicious_pt_ref_is_refused(tmp_path: Path, how: str, suffix: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    write_malicious(path, marker, how)
    model = small_model(0)
    before = frozen(model)
    ckpt = Checkpointer(tmp_path / "store", model=model)
    with pytest.raises(UnsafeFileError) as excinfo:
        ckpt.restore(str(path))
    assert str(path) in str(excinfo.value)
    assert not marker.exists(), "the pickle payload ran"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_malicious_pt_as_file_url_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    write_malicious(path, marker, "zip-inside-state-dict")
    ckpt = Checkpointer(tmp_path / "store", model=small_model(0))
    with pytest.raises(UnsafeFileError):
        ckpt.restore(path.as_uri())
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("form", ["state_dict", "wrapped", "safetensors", "file-url"])
def test_plain_weight_files_load(tmp_path: Path, form: str) -> None:
    source = small_model(1)
    if form == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "weights.safetensors"
        save_file(source.state_dict(), str(path))
    else:
        path = tmp_path / "weights.pt"
        state = source.state_dict()
        torch.save({"state_dict": state} if form == "wrapped" else state, path)
    target = small_model(2)
    assert not same_weights(source, target)
    ref = path.as_uri() if form == "file-url" else str(path)
    report = Checkpointer(tmp_path / "store", model=target).restore(ref)
    assert same_weights(source, target)
    assert report.restored == ["model"]
    assert not report.rng_restored
    assert files_under(tmp_path / "store") == [], "restoring a weights file wrote to the store"


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file(small_model(1).state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:-10])
    model = small_model(2)
    before = frozen(model)
    with pytest.raises(UnsafeFileError):
        Checkpointer(tmp_path / "store", model=model).restore(str(path))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- values that need pickle -------------------------------------------------------------------
@pytest.mark.parametrize("wait", [True, None], ids=["sync", "async"])
def test_value_needing_pickle_is_refused_by_name(tmp_path: Path, wait: bool | None) -> None:
    store = tmp_path / "store"
    ckpt = Checkpointer(store, model=small_model(0), cfg=Config(0.1))
    with pytest.raises(PickleRequiredError) as excinfo:
        ckpt.save(step=1, wait=wait)
    message = str(excinfo.value)
    assert "'cfg'" in message and "allow_pickle" in message
    ckpt.close()  # nothing in flight either
    assert files_under(store) == [], "a refused save wrote to the store"


def test_nested_value_needing_pickle_names_its_path(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "store", extras={"lr": 0.1, "cfg": Config(0.2)})
    with pytest.raises(PickleRequiredError) as excinfo:
        ckpt.save(wait=True)
    assert "extras[cfg]" in str(excinfo.value)


def test_allow_pickle_for_other_names_does_not_cover_it(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "store", cfg=Config(0.1), allow_pickle={"other"})
    with pytest.raises(PickleRequiredError, match="'cfg'"):
        ckpt.save(wait=True)


@pytest.mark.parametrize("allow", [True, {"cfg"}], ids=["all", "by-name"])
def test_allowed_pickle_saves_and_restore_needs_allow_pickle(tmp_path: Path,
                                                             allow: Any) -> None:
    store = tmp_path / "store"
    model = small_model(0)
    saved_weights = frozen(model)
    info = Checkpointer(store, model=model, cfg=Config(0.25), allow_pickle=allow,
                        run="p").save(step=3, wait=True)
    assert Store(store).verify(info.id) == []

    target = small_model(1)
    before = frozen(target)
    ckpt = Checkpointer(store, model=target, cfg=None)
    with pytest.raises(RestoreError) as excinfo:
        ckpt.restore(info.id)
    assert "'cfg'" in str(excinfo.value) and "allow_pickle" in str(excinfo.value)
    # Refused before anything was loaded.
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    assert ckpt.objects["cfg"] is None

    report = ckpt.restore(info.id, allow_pickle=True)
    assert ckpt.objects["cfg"] == Config(0.25)
    assert report.values["cfg"] == Config(0.25)
    assert all(torch.equal(v, saved_weights[k]) for k, v in target.state_dict().items())


def test_weights_only_restore_skips_the_pickled_value(tmp_path: Path) -> None:
    """Loading only the model needs no pickle, even from a checkpoint that holds one."""
    store = tmp_path / "store"
    model = small_model(0)
    info = Checkpointer(store, model=model, cfg=Config(0.25), allow_pickle=True,
                        run="p").save(wait=True)
    target = small_model(1)
    ckpt = Checkpointer(store, model=target, cfg=None)
    ckpt.restore(info.id, weights_only=True)
    assert same_weights(model, target)
    assert ckpt.objects["cfg"] is None


# -- bad stores and unsupported objects --------------------------------------------------------
# oss:// is a backend fsspec knows whose package (ossfs) is not installed
@pytest.mark.parametrize("url", ["nosuchproto://bucket/ckpts", "oss://bucket/ckpts"])
def test_bad_store_url_is_a_store_error(url: str) -> None:
    with pytest.raises(StoreError) as excinfo:
        Store(url)
    assert url in str(excinfo.value)
    with pytest.raises(StoreError):
        Checkpointer(url, model=small_model(0))


def test_store_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-folder"
    path.write_text("hello")
    with pytest.raises(StoreError, match="file"):
        Checkpointer(path, model=small_model(0))
    assert path.read_text() == "hello"


@pytest.mark.parametrize("wait", [True, None], ids=["sync", "async"])
def test_folder_that_is_not_a_store_is_left_alone(tmp_path: Path, wait: bool | None) -> None:
    folder = tmp_path / "my-project"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    ckpt = Checkpointer(folder, model=small_model(0))
    if wait:
        with pytest.raises(StoreError, match="not a ckpt_notebook store"):
            ckpt.save(wait=True)
    else:
        ckpt.save()
        with pytest.raises(BackgroundSaveError) as excinfo:
            ckpt.wait()
        assert isinstance(excinfo.value.__cause__, StoreError)
    ckpt.close()
    assert files_under(folder) == ["train.py"], "a refused save wrote into the folder"


def unsupported_objects(tmp_path: Path) -> dict[str, Any]:
    return {
        "lambda": lambda x: x,
        "open-file": open(tmp_path / "f.txt", "w"),  # closed by the test
        "lock": threading.Lock(),
        "generator": (i for i in range(3)),
    }


@pytest.mark.parametrize("kind", ["lambda", "open-file", "lock", "generator"])
def test_unsupported_object_is_a_capture_error(tmp_path: Path, kind: str) -> None:
    obj = unsupported_objects(tmp_path)[kind]
    store = tmp_path / "store"
    try:
        ckpt = Checkpointer(store, model=small_model(0), thing=obj)
        with pytest.raises(CaptureError) as excinfo:
            ckpt.save(wait=True)
        assert "'thing'" in str(excinfo.value)
        ckpt.close()
    finally:
        if hasattr(obj, "close"):
            obj.close()
    assert files_under(store) == [], "a refused save wrote to the store"


@pytest.mark.parametrize("kind", ["lambda", "open-file", "lock", "generator"])
def test_unpicklable_object_with_allow_pickle_is_a_capture_error(tmp_path: Path,
                                                                 kind: str) -> None:
    """allow_pickle=True does not turn an unpicklable object into a raw TypeError /
    PicklingError: it is still a CaptureError naming the variable, and nothing is written."""
    obj = unsupported_objects(tmp_path)[kind]
    store = tmp_path / "store"
    try:
        ckpt = Checkpointer(store, model=small_model(0), thing=obj, allow_pickle=True)
        with pytest.raises(CaptureError) as excinfo:
            ckpt.save(wait=True)
        assert "thing" in str(excinfo.value)
        ckpt.close()
    finally:
        if hasattr(obj, "close"):
            obj.close()
    assert files_under(store) == [], "a refused save wrote to the store"


def test_pickled_value_whose_class_is_gone_is_a_restore_error(tmp_path: Path) -> None:
    module = types.ModuleType("ckpt_tests_vanishing")
    exec("class Settings:\n    def __init__(self):\n        self.depth = 3\n", vars(module))
    sys.modules[module.__name__] = module
    try:
        info = Checkpointer(tmp_path / "store", model=small_model(0),
                            settings=module.Settings(), allow_pickle=True).save(wait=True)
    finally:
        del sys.modules[module.__name__]
    target = small_model(1)
    before = frozen(target)
    ckpt = Checkpointer(tmp_path / "store", model=target, settings=None)
    with pytest.raises(RestoreError) as excinfo:
        ckpt.restore(info.id, allow_pickle=True)
    assert "'settings'" in str(excinfo.value) and "ckpt_tests_vanishing" in str(excinfo.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    assert ckpt.objects["settings"] is None
