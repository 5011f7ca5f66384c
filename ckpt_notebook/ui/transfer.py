"""``ckpt_notebook.copy`` and ``materialize`` with a progress bar where a person is watching."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..manager import copying
from ..types import CheckpointInfo
from .progress import progress_bar

__all__ = ["copy", "materialize"]


def copy(src: str | os.PathLike[str], name: str, to: str | None = None, *,
         store: Any = None, progress: bool | None = None) -> CheckpointInfo:
    """Copy a folder, file, archive, URL or checkpoint REF into a named, immutable checkpoint.

        ckpt_notebook.copy("models/", "resnet-v1", to="s3://bucket/checkpoints")

    ``to`` defaults to the current store. A taken name raises ``CheckpointExistsError``.
    """
    with progress_bar(f"copy {name}", enabled=progress) as bar:
        return copying.copy(src, name, to=to, store=store, progress=bar)


def materialize(name: str, directory: str | os.PathLike[str], *, store: Any = None,
                progress: bool | None = None) -> Path:
    """Write a named checkpoint's files into ``directory`` (read-only); reuses a folder that
    still verifies.

        path = ckpt_notebook.materialize("resnet-v1", "weights/")
    """
    with progress_bar(f"get {name}", enabled=progress) as bar:
        return copying.materialize(name, directory, store=store, progress=bar)
