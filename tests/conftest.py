"""Shared fixtures: a fresh store folder and small real models."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests name their store explicitly; a developer's CKPT_NOTEBOOK_STORE must not leak in."""
    monkeypatch.delenv("CKPT_NOTEBOOK_STORE", raising=False)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def mlp(seed: int = 0, width: int = 64):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(16, width), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(width, 4),
    )


def ipython_shell() -> Any:
    """The in-process IPython shell the magic tests share (history kept in memory only)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    return InteractiveShell.instance(config=config)


def files_of(store: Any, name: str, out: Path) -> dict[str, bytes]:
    """The files of checkpoint ``name``, materialized into ``out``: relative path -> bytes."""
    from ckpt_notebook.manager.materializing import materialize

    folder = materialize(name, out, store=store)
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def wait_until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy, or ``timeout`` seconds pass; returns
    its last value, for the caller to assert (a deadline, not a timing assumption)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def pythonpath_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


# Loopback servers (moto S3, a fault-injecting proxy, an HTTP file server, a Hub stand-in),
# registered once here so every test module can ask for them by name.
from servers import faulty_s3, hf_hub, http_files, s3_server  # noqa: E402, F401
