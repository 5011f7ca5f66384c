"""What gets saved and restored: every built-in kind, all-or-nothing restore, async snapshots."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import mlp

import ckpt_notebook as ckn
from ckpt_notebook.errors import BackgroundSaveError, RestoreError


def test_plain_values_roundtrip(store_dir: Path) -> None:
    values = {
        "cfg": {"lr": 1e-3, "layers": (64, 64), 3: "int key", "nan": math.nan, "inf": -math.inf,
                "blob": b"\x00\x01", "tags": {"a", "b"}, "none": None, "flag": True,
                "__tensor__": "looks like a tag"},
        "arr": np.arange(12, dtype=np.float64).reshape(3, 4),
        "t": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
        "scalar": np.int64(7),
        "dtype": torch.float16,
    }
    ckpt = ckn.Checkpointer(store_dir, rng=False, **values)
    ckpt.save(wait=True)
    report = ckn.Checkpointer(store_dir, rng=False).restore()
    got = report.values
    cfg = got["cfg"]
    assert cfg["layers"] == (64, 64) and cfg[3] == "int key" and math.isnan(cfg["nan"])
    assert cfg["inf"] == -math.inf and cfg["blob"] == b"\x00\x01" and cfg["tags"] == {"a", "b"}
    assert cfg["__tensor__"] == "looks like a tag" and cfg["none"] is None and cfg["flag"] is True
    np.testing.assert_array_equal(got["arr"], values["arr"])
    assert torch.equal(got["t"], values["t"]) and got["t"].dtype == torch.bfloat16
    assert got["scalar"] == 7 and isinstance(got["scalar"], np.int64)
    assert got["dtype"] is torch.float16


def test_generators_roundtrip(store_dir: Path) -> None:
    gens = {"np_gen": np.random.default_rng(1), "py_gen": random.Random(2),
            "torch_gen": torch.Generator().manual_seed(3)}
    ckpt = ckn.Checkpointer(store_dir, rng=False, **gens)
    ckpt.save(wait=True)
    expected = (gens["np_gen"].random(), gens["py_gen"].random(),
                torch.rand(1, generator=gens["torch_gen"]).item())
    ckpt.restore()
    got = (gens["np_gen"].random(), gens["py_gen"].random(),
           torch.rand(1, generator=gens["torch_gen"]).item())
    assert got == expected


def test_global_rng_restored(store_dir: Path) -> None:
    ckpt = ckn.Checkpointer(store_dir)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    ckpt.save(wait=True)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    report = ckpt.restore()
    assert report.rng_restored
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_shape_mismatch_names_key_and_changes_nothing(store_dir: Path) -> None:
    model, opt_model = mlp(width=64), mlp(width=64)
    opt = torch.optim.Adam(opt_model.parameters())
    ckn.Checkpointer(store_dir, model=model, opt=opt).save(wait=True)
    other = mlp(seed=5, width=32)
    other_opt = torch.optim.Adam(other.parameters())
    before = {k: v.clone() for k, v in other.state_dict().items()}
    opt_before = other_opt.state_dict()
    with pytest.raises(RestoreError, match=r"0\.weight has shape \(64, 16\).*\(32, 16\)"):
        ckn.Checkpointer(store_dir, model=other, opt=other_opt).restore()
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    assert other_opt.state_dict() == opt_before


def test_strict_and_non_strict_keys(store_dir: Path) -> None:
    model = mlp()
    ckn.Checkpointer(store_dir, model=model, rng=False).save(wait=True)
    bigger = torch.nn.Sequential(*list(mlp(seed=3)), torch.nn.Linear(4, 2))
    with pytest.raises(RestoreError, match=r"missing keys 4\.weight, 4\.bias"):
        ckn.Checkpointer(store_dir, model=bigger, rng=False).restore()
    report = ckn.Checkpointer(store_dir, model=bigger, rng=False).restore(strict=False)
    assert report.objects[0].missing_keys == ["4.weight", "4.bias"]
    assert torch.equal(bigger[0].weight, model[0].weight)


def test_weights_only_leaves_optimizer_fresh(store_dir: Path) -> None:
    model = mlp()
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 16)).sum().backward()
    opt.step()
    ckn.Checkpointer(store_dir, model=model, optimizer=opt).save(wait=True)
    fresh = mlp(seed=9)
    fresh_opt = torch.optim.Adam(fresh.parameters())
    report = ckn.Checkpointer(store_dir, model=fresh, optimizer=fresh_opt).restore(
        weights_only=True)
    assert report.restored == ["model"] and not report.rng_restored
    assert fresh_opt.state_dict()["state"] == {}
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_async_snapshot_is_consistent(store_dir: Path) -> None:
    model = mlp()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    info = ckpt.save()
    assert not info.committed
    with torch.no_grad():  # in-place updates right after save() returns must not leak in
        for p in model.parameters():
            p.mul_(0)
    committed = ckpt.wait()
    assert committed is not None and committed.committed and committed.id == info.id
    ckpt.restore(info.id)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_background_error_surfaces_at_next_call(store_dir: Path) -> None:
    ckpt = ckn.Checkpointer(store_dir, model=mlp(), rng=False)
    ckpt.save(wait=True)
    # Make the background write fail: the folder no longer looks like a store.
    (store_dir / "ckpt-store.json").unlink()
    (store_dir / "stray.txt").write_text("not a store any more")
    info = ckpt.save()
    with pytest.raises(BackgroundSaveError, match=f"background save of {info.id} failed"):
        ckpt.list()
    ckpt.list()  # reported once, not forever


def test_report_renders_text_and_html(store_dir: Path) -> None:
    ckpt = ckn.Checkpointer(store_dir, model=mlp(), note="<b>hi</b>")
    ckpt.save(step=3, wait=True)
    report = ckpt.restore()
    text = str(report)
    assert "step 3" in text and "model" in text and "rng" in text
    html = report._repr_html_()
    assert "<table>" in html and "<b>hi</b>" not in html


def test_device_mapping_to_target(store_dir: Path) -> None:
    model = mlp().to(torch.float64)
    ckn.Checkpointer(store_dir, model=model, rng=False).save(wait=True)
    meta_saved = ckn.Store(store_dir).manifest(ckn.Store(store_dir).list()[0].id)
    assert meta_saved.objects["model"].tensors[0].device == "cpu"
    target = mlp(seed=4).to(torch.float64)
    ckn.Checkpointer(store_dir, model=target, rng=False).restore()
    assert torch.equal(target[0].weight, model[0].weight)


class HookedLinear(torch.nn.Linear):
    """A module that customizes loading: restore must go through load_state_dict for it."""

    loads = 0

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        HookedLinear.loads += 1
        super()._load_from_state_dict(*args, **kwargs)


@pytest.mark.parametrize("hooked", [False, True])
def test_large_tensors_restore_in_place_unless_loading_is_customized(store_dir: Path,
                                                                     hooked: bool) -> None:
    cls = HookedLinear if hooked else torch.nn.Linear
    torch.manual_seed(0)
    model = cls(1024, 512)  # a 2 MiB weight: a blob of its own, read straight into the model
    ckn.Checkpointer(store_dir, model=model, rng=False).save(wait=True)
    target = cls(1024, 512)
    weight_storage = target.weight.data_ptr()
    HookedLinear.loads = 0
    ckn.Checkpointer(store_dir, model=target, rng=False).restore()
    assert torch.equal(target.weight, model.weight) and torch.equal(target.bias, model.bias)
    assert target.weight.data_ptr() == weight_storage  # same parameter memory, filled in place
    assert HookedLinear.loads == (1 if hooked else 0)
