"""ckpt_notebook: checkpoints for PyTorch training in Jupyter.

    import ckpt_notebook as ckn
    ckpt = ckn.Checkpointer("checkpoints", model=model, optimizer=opt)
    ckpt.save(step=100, metrics={"val_loss": 0.31})
    ckpt.restore("latest")

Importing the package is instant: torch, numpy and the UI libraries load on first use.

Failures in the background (a save that failed on its thread, a full store) and retention
decisions (what a prune removed, and why) go to the ``ckpt_notebook`` logger: errors and
warnings, and prunes at INFO. The package adds no handler, not even a NullHandler: where the
application configures none, logging's last-resort handler prints warnings and errors to
stderr, so a failure never passes silently. A notebook session shows them in the notebook.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (  # plain classes that import nothing: loaded eagerly
    BackgroundSaveError,
    CaptureError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    CkptError,
    FormatError,
    HubAuthError,
    HubError,
    HubNotFoundError,
    IntegrityError,
    InvalidArgumentError,
    InvalidNameError,
    PickleRequiredError,
    ProtectedCheckpointError,
    RestoreError,
    SourceError,
    SourceNotFoundError,
    StoreBusyError,
    StoreError,
    StoreNotFoundError,
    StorePermissionError,
    UnsafeFileError,
    UnsafePathError,
    UnsupportedSourceError,
)

if TYPE_CHECKING:
    from .manager import Checkpointer
    from .storage import Store
    from .types import CheckpointInfo, RestoreReport
    from .ui.copy_api import copy, materialize
    from .ui.session import session
    from .ui.widget import widget

__all__ = [
    "BackgroundSaveError",
    "CaptureError",
    "CheckpointExistsError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "Checkpointer",
    "CkptError",
    "FormatError",
    "HubAuthError",
    "HubError",
    "HubNotFoundError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidNameError",
    "PickleRequiredError",
    "ProtectedCheckpointError",
    "RestoreError",
    "RestoreReport",
    "SourceError",
    "SourceNotFoundError",
    "Store",
    "StoreBusyError",
    "StoreError",
    "StoreNotFoundError",
    "StorePermissionError",
    "UnsafeFileError",
    "UnsafePathError",
    "UnsupportedSourceError",
    "__version__",
    "copy",
    "load_ipython_extension",
    "materialize",
    "session",
    "widget",
]

_LAZY = {
    "Checkpointer": "manager",
    "session": "ui.session",
    "Store": "storage",
    "CheckpointInfo": "types",
    "RestoreReport": "types",
    "widget": "ui.widget",
    "copy": "ui.copy_api",
    "materialize": "ui.copy_api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ckpt_notebook' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab extension (``extension/`` built into ``labextension/``)."""
    return [{"src": "labextension", "dest": "ckpt-notebook"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension: the REST API under ``{base_url}ckpt-notebook/api/``."""
    return [{"module": "ckpt_notebook.server"}]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ckpt_notebook``: registers the ``%checkpoint`` magic."""
    from .ui.magics import load_ipython_extension as load

    load(ipython)
