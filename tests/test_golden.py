"""Stores written by earlier versions keep restoring, forever."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import ckpt_notebook as ckn

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
from make_v1 import build  # noqa: E402


def test_v1_store_restores(tmp_path: Path) -> None:
    store = tmp_path / "v1"
    shutil.copytree(GOLDEN / "v1", store)
    model, opt = build()
    ckpt = ckn.Checkpointer(store, rng=False, model=model, optimizer=opt)
    info = ckpt.resolve("golden-v1")
    assert info.step == 1 and info.metrics == {"val_loss": 0.5} and info.tags == ("golden",)
    report = ckpt.restore("golden-v1")
    assert report.values["cfg"] == {"lr": 0.01, "sizes": (4, 8, 2)}
    np.testing.assert_array_equal(report.values["arr"], np.arange(3))
    assert opt.state_dict()["state"][0]["step"] == torch.tensor(1.0)
    ref, _ = build()
    assert not torch.equal(ref[0].weight, model[0].weight)  # the saved step changed them
    assert ckpt.verify() == []
