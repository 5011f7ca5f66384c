"""The checkpoint dashboard: a param model over a store (:class:`DashboardModel`, tested
without a browser) plus Panel views, served by ``ckpt dashboard`` (:func:`serve`,
:func:`main`) or shown in a notebook (:func:`inline`).

Importing this package imports neither panel nor bokeh; they load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import inline, main, serve
    from .model import DashboardModel, Outcome

__all__ = ["DashboardModel", "Outcome", "inline", "main", "serve"]

_LAZY = {"DashboardModel": "model", "Outcome": "model", "inline": "app", "main": "app",
         "serve": "app"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
