"""``ckpt_notebook.copy`` and ``materialize`` with a progress bar where a person is watching."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..manager import copying, materializing
from ..manager.hub import HubUpload, upload_to_hub
from ..manager.sources import expand_source
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
    from ..storage import Store

    if to is not None and str(to).startswith("hf://"):
        if name is not None:
            raise ValueError(f"a Hub upload takes no name: the files go to {to} as they are "
                             "(leave the name out)")
        with progress_bar(f"upload {src}", enabled=progress) as bar:
            return upload_to_hub(expand_source(os.fspath(src)), str(to), store=store if isinstance(
                store, Store) else Store(store), patterns=patterns, excludes=excludes,
                dry_run=dry_run, progress=bar)
    if patterns or excludes or dry_run:
        raise ValueError("patterns, excludes and dry_run apply to Hub uploads only "
                         "(to='hf://owner/repo[@revision]')")
    if name is None:
        raise ValueError("copy needs a name for the new checkpoint (name=...)")
    with progress_bar(f"copy {name}", enabled=progress) as bar:
        return copying.copy(src, name, to=to, store=store, progress=bar,
                            archive_limits=archive_limits)


def materialize(name: str, directory: str | os.PathLike[str], *, store: Any = None,
                progress: bool | None = None) -> Path:
    """Write a named checkpoint's files into ``directory`` (read-only); reuses a folder that
    still verifies.

        path = ckpt_notebook.materialize("resnet-v1", "weights/")
    """
    with progress_bar(f"get {name}", enabled=progress) as bar:
        return materializing.materialize(name, directory, store=store, progress=bar)
