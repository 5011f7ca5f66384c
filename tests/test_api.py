"""The public surface is small and importing it is instant (no torch, no UI libraries)."""

from __future__ import annotations

import subprocess
import sys

import ckpt_notebook


def test_exported_members() -> None:
    from ckpt_notebook import errors

    assert sorted(ckpt_notebook.__all__) == sorted([
        "CheckpointInfo", "Checkpointer", "RestoreReport", "Store", "__version__",
        "load_ipython_extension", "copy", "materialize", "session", "widget",
        # every error a user can receive (errors.NeedsForceError is the old name of one)
        *(name for name in errors.__all__ if name != "NeedsForceError"),
    ])
    for name in ckpt_notebook.__all__:
        assert getattr(ckpt_notebook, name) is not None


def test_import_is_light() -> None:
    code = ("import sys, ckpt_notebook; heavy = {'torch', 'numpy', 'panel', 'ipywidgets', "
            "'huggingface_hub', 'fsspec', 'IPython'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_subclass_builtins() -> None:
    from ckpt_notebook import errors

    assert issubclass(errors.CheckpointExistsError, FileExistsError)
    assert issubclass(errors.CheckpointNotFoundError, LookupError)
    assert issubclass(errors.IntegrityError, ValueError)
    assert str(errors.CheckpointNotFoundError("plain message")) == "plain message"
