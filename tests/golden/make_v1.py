"""Writes tests/golden/v1: a tiny store in format version 1. Run once; the result is committed
and must keep restoring in every later version (see test_golden.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

import ckpt_notebook as ckn

HERE = Path(__file__).parent / "v1"


def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, opt


if __name__ == "__main__":
    shutil.rmtree(HERE, ignore_errors=True)
    model, opt = build()
    model(torch.ones(3, 4)).sum().backward()
    opt.step()
    ckpt = ckn.Checkpointer(HERE, run="golden", rng=False, model=model, optimizer=opt,
                            cfg={"lr": 0.01, "sizes": (4, 8, 2)}, arr=np.arange(3))
    ckpt.save(step=1, metrics={"val_loss": 0.5}, tags=["golden"], name="golden-v1", wait=True)
    (HERE / "index.json").unlink()
    (HERE / ".lock").unlink()
    shutil.rmtree(HERE / "tmp", ignore_errors=True)
