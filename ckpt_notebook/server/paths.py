"""Paths the REST API accepts, confined to the Jupyter server's root directory.

A copy's ``src`` must stay inside the root (``ServerApp.root_dir``): an absolute path, a URL,
``~``, any ``..`` component, or a path whose real location (symlinks followed, as
``os.path.realpath`` does) lies outside is refused with :class:`ForbiddenPathError` before
anything is read. A ``src`` that names nothing under the root and has no ``/`` is a
checkpoint REF. Stores are different: a relative store path is relative to the root, while
absolute paths and fsspec URLs are used as they are (as ``ckpt copy --to`` takes them).
"""

from __future__ import annotations

import os

from ..errors import CkptError, InvalidArgumentError, SourceNotFoundError
from ..manager.refs import CHECKPOINT_PREFIX
from ..storage.backend import DEFAULT_STORE, STORE_ENV

__all__ = ["ForbiddenPathError", "confined", "copy_source", "default_store", "shown",
           "store_url"]


class ForbiddenPathError(CkptError, PermissionError):
    """A path that would lead outside the server's root directory (answered with 403)."""


def _refuse(path: str, why: str) -> ForbiddenPathError:
    return ForbiddenPathError(f"refusing {path!r}: {why}; give a path inside the server's "
                              "root folder, as the file browser shows it")


def confined(root: str, rel: str) -> str:
    """The real path of ``rel`` (relative to ``root``), proven to lie inside ``root``."""
    if "\x00" in rel:
        raise InvalidArgumentError(f"invalid path {rel!r}: it contains a NUL character",
                                   path=rel)
    if "://" in rel:
        raise _refuse(rel, "URLs are not paths under the server root")
    if os.path.isabs(rel) or rel.startswith(("~", "\\")):
        raise _refuse(rel, "absolute paths are not allowed")
    if ".." in rel.replace("\\", "/").split("/"):
        raise _refuse(rel, "'..' is not allowed")
    real_root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(real_root, rel))
    if full != real_root and not full.startswith(real_root.rstrip(os.sep) + os.sep):
        raise _refuse(rel, "it is a link that leads outside the server root")
    return full


def copy_source(root: str, src: str) -> str:
    """What ``copying.copy`` gets for ``src``: the confined real path of a file or folder
    under the root, else ``ckpt:REF`` (a checkpoint of the store)."""
    if not src.strip():
        raise InvalidArgumentError("src is empty: give a path under the server root or a "
                                   "checkpoint REF")
    if src.startswith(CHECKPOINT_PREFIX):
        return src
    rel = src.rstrip("/") or "."
    full = confined(root, rel)  # refuses escapes before anything is looked at
    if os.path.lexists(os.path.join(root, rel)):
        return full
    if "/" in rel:
        raise SourceNotFoundError(f"nothing to copy at {src!r}: no such file or folder "
                                  "under the server root", path=src)
    return CHECKPOINT_PREFIX + src


def store_url(root: str, store: str | None, default: str) -> str:
    """The store URL for a request's ``store``/``to``: relative paths are relative to the
    root; absolute paths and URLs are taken as they are; empty means ``default``."""
    if store is None or not str(store).strip():
        store = default
    if "\x00" in store:
        raise InvalidArgumentError(f"invalid store {store!r}: it contains a NUL character",
                                   url=store)
    if "://" in store or os.path.isabs(store):
        return store
    return os.path.normpath(os.path.join(root, store))


def default_store(root: str, folder: str = "") -> str:
    """The store a notebook in ``folder`` (relative to the root) uses, as the API shows it:
    ``$CKPT_NOTEBOOK_STORE`` (relative to ``folder``, as a kernel started there reads it),
    else ``folder/checkpoints``; relative to the root when inside it."""
    where = confined(root, folder or ".")
    env = os.environ.get(STORE_ENV) or ""
    if "://" in env:
        return env
    return shown(root, os.path.join(where, env or DEFAULT_STORE))


def shown(root: str, url: str) -> str:
    """``url`` as the API shows it: relative to the root when it is a path inside it."""
    if "://" in url or not os.path.isabs(url):
        return url
    real_root = os.path.realpath(root)
    path = os.path.normpath(url)
    for base in {real_root, os.path.normpath(os.path.abspath(root))}:
        if path == base:
            return "."
        if path.startswith(base.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, base)
    return url
