"""Facts about where a save happens: notebook, run name, library versions; metric cleaning."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from .._version import __version__
from ..errors import CaptureError

__all__ = ["clean_metrics", "default_run_name", "library_versions", "notebook_path"]


def clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in (metrics or {}).items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CaptureError(f"metric {key!r} must be a number, not {type(value).__name__} "
                               f"({value!r:.40}); pass float(...) of it")
        out[str(key)] = float(value) if math.isfinite(value) else None
    return out


def default_run_name() -> str:
    """The notebook's or script's name without extension; ``notebook`` in an unnamed kernel,
    ``main`` elsewhere."""
    path = notebook_path()
    if path:
        return os.path.splitext(os.path.basename(path))[0] or "main"
    return "notebook" if "ipykernel" in sys.modules else "main"


def notebook_path() -> str | None:
    """The notebook (or script) doing the saving, when it can be told."""
    for var in ("JPY_SESSION_NAME", "__vsc_ipynb_file__"):
        if os.environ.get(var):
            return os.environ[var]
    main = sys.modules.get("__main__")
    session = getattr(main, "__session__", None) or getattr(main, "__vsc_ipynb_file__", None)
    if isinstance(session, str) and session:
        return session
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.endswith(".py") and "ipykernel" not in sys.modules:  # a kernel's argv is its launcher
        return argv0
    return None


def library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "ckpt_notebook": __version__}
    for mod in ("torch", "numpy", "safetensors"):
        module = sys.modules.get(mod)
        if module is not None:
            out[mod] = str(getattr(module, "__version__", "?"))
    return out
