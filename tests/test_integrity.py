"""Integrity: one flipped byte in any blob, and both restore and verify name it.

One checkpoint with several kinds of blob: large tensors alone (model weights, Adam moments,
a numpy array in a plain value), the pack of small tensors (biases, steps, RNG state), and a
pickled value. For each blob in turn: flip one byte (first, middle or last), delete it, or
truncate it. ``restore`` must raise :class:`IntegrityError` naming the checkpoint, the object
and the tensor, and change nothing (all-or-nothing); ``verify`` must report that blob.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from ckpt_notebook.errors import IntegrityError  # noqa: E402
from ckpt_notebook.manager import Checkpointer  # noqa: E402
from ckpt_notebook.storage import Store  # noqa: E402


class Config:
    """A value only pickle can save (saved with allow_pickle for it)."""

    def __init__(self, lr: float, layers: list[int]) -> None:
        self.lr = lr
        self.layers = layers

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


# Each blob of the checkpoint, named by one (object, tensor path) it holds.
BLOBS = {
    "model-0.weight": ("model", "0.weight"),  # 1 MiB: a blob of its own
    "model-1.weight": ("model", "1.weight"),  # 2 MiB
    "adam-0-exp_avg": ("optimizer", "state.0.exp_avg"),
    "adam-0-exp_avg_sq": ("optimizer", "state.0.exp_avg_sq"),
    "adam-2-exp_avg": ("optimizer", "state.2.exp_avg"),
    "adam-2-exp_avg_sq": ("optimizer", "state.2.exp_avg_sq"),
    "numpy-value": ("data", "table"),  # a 1 MiB numpy array inside a plain value
    "packed-small": ("model", "0.bias"),  # biases, Adam steps, RNG... packed together
    "pickled-value": ("cfg", None),  # the pickled Config
}


def build(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 1024))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(8, 512, generator=gen)).square().mean().backward()
    opt.step()
    opt.zero_grad()
    return model, opt


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store holding one checkpoint; tests corrupt copies of it."""
    root = tmp_path_factory.mktemp("integrity") / "store"
    model, opt = build(0)
    data = {"table": np.arange(512 * 512, dtype=np.float32).reshape(512, 512), "n": 3}
    ckpt = Checkpointer(root, model=model, optimizer=opt, data=data,
                        cfg=Config(0.1, [512, 1024]), allow_pickle={"cfg"}, run="integrity")
    info = ckpt.save(step=5, metrics={"loss": 0.5}, wait=True)
    ckpt.close()
    store = Store(root)
    doc = store.manifest(info.id)
    owners: dict[str, set[str]] = {}  # blob -> "object: tensor path" it holds
    where: dict[tuple[str, str | None], str] = {}
    for name, obj in doc.objects.items():
        for t in obj.tensors:
            owners.setdefault(t.blob, set()).add(f"{name}: tensor {t.path}")
            where[(name, t.path)] = t.blob
        for p in obj.pickles:
            owners.setdefault(p.blob, set()).add(f"{name}: ")
            where[(name, None)] = p.blob
    return {"root": root, "id": info.id, "doc": doc, "owners": owners, "where": where}


def test_every_kind_of_blob_is_covered(saved: dict[str, Any]) -> None:
    """The parametrized blobs are all of the checkpoint's blobs, and they differ."""
    digests = {saved["where"][sel] for sel in BLOBS.values()}
    assert len(digests) == len(BLOBS), "two selectors name the same blob"
    assert digests == set(saved["doc"].blobs), "a blob of the checkpoint is not tested"
    assert Store(saved["root"]).verify(saved["id"]) == []


def corrupt_copy(saved: dict[str, Any], tmp_path: Path, blob: str) -> tuple[Path, str, Path]:
    root = tmp_path / "store"
    shutil.copytree(saved["root"], root)
    digest = saved["where"][BLOBS[blob]]
    return root, digest, root / "blobs" / digest[:2] / digest


def state_of(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[Any, Any]:
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def assert_same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def check_restore_fails(saved: dict[str, Any], root: Path, digest: str, blob: str,
                        problem: str) -> None:
    """restore names the checkpoint, the object and the tensor, and changes nothing."""
    model, opt = build(1)  # different weights and optimizer state from the saved ones
    data = {"table": np.zeros(3), "n": 0}
    before = state_of(model, opt)
    rng_before = torch.get_rng_state()
    ckpt = Checkpointer(root, model=model, optimizer=opt, data=data, cfg=None, run="other")
    with pytest.raises(IntegrityError) as excinfo:
        ckpt.restore(saved["id"], allow_pickle=True)
    message = str(excinfo.value)
    assert saved["id"] in message
    assert digest[:16] in message
    assert problem in message
    obj, path = BLOBS[blob]
    if path is None:
        assert f": {obj}:" in message, message
    else:
        assert any(owner in message for owner in saved["owners"][digest]), message
    # All-or-nothing: nothing was loaded into anything.
    assert_same(state_of(model, opt), before)
    assert ckpt.objects["data"] is data and data["n"] == 0
    assert ckpt.objects["cfg"] is None
    assert torch.equal(torch.get_rng_state(), rng_before)


def check_verify_names(saved: dict[str, Any], root: Path, digest: str, blob: str,
                       problem: str) -> None:
    problems = Store(root).verify(saved["id"])
    assert len(problems) == 1, problems
    p = problems[0]
    assert p.checkpoint == saved["id"] and p.blob == digest
    assert problem in p.problem
    obj, path = BLOBS[blob]
    if path is None:
        assert p.where.startswith(f"{obj}:"), p.where
    else:
        assert any(owner in p.where for owner in saved["owners"][digest]), p.where
    assert saved["id"] in str(p) and digest[:16] in str(p)
    # The Checkpointer's verify (by REF) reports the same.
    via_ckpt = Checkpointer(root, run="integrity").verify("latest")  # issue 13: its run's
    assert [(q.checkpoint, q.blob) for q in via_ckpt] == [(saved["id"], digest)]


@pytest.mark.parametrize("position", ["first", "middle", "last"])
@pytest.mark.parametrize("blob", list(BLOBS))
def test_flipped_byte_is_named(saved: dict[str, Any], tmp_path: Path, blob: str,
                               position: str) -> None:
    root, digest, path = corrupt_copy(saved, tmp_path, blob)
    raw = bytearray(path.read_bytes())
    at = {"first": 0, "middle": len(raw) // 2, "last": len(raw) - 1}[position]
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    check_verify_names(saved, root, digest, blob, "corrupt")
    check_restore_fails(saved, root, digest, blob, "corrupt")


@pytest.mark.parametrize("blob", list(BLOBS))
def test_missing_blob_is_named(saved: dict[str, Any], tmp_path: Path, blob: str) -> None:
    root, digest, path = corrupt_copy(saved, tmp_path, blob)
    path.unlink()
    check_verify_names(saved, root, digest, blob, "missing")
    check_restore_fails(saved, root, digest, blob, "missing")


@pytest.mark.parametrize("blob", ["model-1.weight", "packed-small"])
def test_truncated_blob_is_named(saved: dict[str, Any], tmp_path: Path, blob: str) -> None:
    root, digest, path = corrupt_copy(saved, tmp_path, blob)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    check_verify_names(saved, root, digest, blob, "truncated")
    check_restore_fails(saved, root, digest, blob, "")


def test_intact_checkpoint_restores_everything(saved: dict[str, Any], tmp_path: Path) -> None:
    """The control: the same restore on an untouched copy loads every object exactly."""
    root = tmp_path / "store"
    shutil.copytree(saved["root"], root)
    want_model, want_opt = build(0)
    model, opt = build(1)
    ckpt = Checkpointer(root, model=model, optimizer=opt, data=None, cfg=None)
    report = ckpt.restore(saved["id"], allow_pickle=True)
    assert set(report.restored) == {"model", "optimizer"}
    assert_same(model.state_dict(), want_model.state_dict())
    assert_same(opt.state_dict()["state"], want_opt.state_dict()["state"])
    assert ckpt.objects["cfg"] == Config(0.1, [512, 1024])
    assert np.array_equal(ckpt.objects["data"]["table"],
                          np.arange(512 * 512, dtype=np.float32).reshape(512, 512))
