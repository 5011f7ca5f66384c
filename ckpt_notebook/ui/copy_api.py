"""``ckpt_notebook.copy`` and ``materialize`` with a progress bar where a person is watching."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..manager import materializing
from ..manager.hub import HubUpload, plan_copy
from ..types import CheckpointInfo
from .progress import progress_bar

__all__ = ["copy", "materialize"]


def copy(src: str | os.PathLike[str], name: str | None = None, to: str | None = None, *,
         store: Any = None, progress: bool | None = None, patterns: list[str] | None = None,
         excludes: list[str] | None = None, dry_run: bool = False,
         archive_limits: Mapping[str, Any] | None = None) -> CheckpointInfo | HubUpload:
    """Copy a folder, file, archive, URL or checkpoint REF into a named, immutable checkpoint.

        ckpt_notebook.copy("models/", "resnet-v1", to="s3://bucket/checkpoints")

    ``to`` defaults to the current store; a taken name raises ``CheckpointExistsError``.
    With ``to="hf://owner/repo[@rev]"`` the files are uploaded to that Hub repo instead
    (``patterns``/``excludes`` filter them, ``dry_run`` lists them); ``name`` is not needed.
    An archive bigger than 64 GiB, or expanding more than 100:1, or with more than 100,000
    entries is refused as a likely bomb; ``archive_limits={"size": "200G", "ratio": 1000,
    "entries": 10**6}`` raises those limits on purpose.
    """
    plan = plan_copy(src, to, name=name, store=store, patterns=patterns or (),
                     excludes=excludes or (), dry_run=dry_run, archive_limits=archive_limits)
    with progress_bar(plan.label, enabled=False if plan.dry_run else progress) as bar:
        return plan.run(bar)


def materialize(name: str, directory: str | os.PathLike[str], *, store: Any = None,
                progress: bool | None = None) -> Path:
    """Write a named checkpoint's files into ``directory`` (read-only); reuses a folder that
    still verifies.

        path = ckpt_notebook.materialize("resnet-v1", "weights/")
    """
    with progress_bar(f"get {name}", enabled=progress) as bar:
        return materializing.materialize(name, directory, store=store, progress=bar)
