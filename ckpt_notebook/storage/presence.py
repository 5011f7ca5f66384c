"""Whether a URL names a store at all: a mistyped ``--store`` must not read as an empty store.

A store is made by its first write (:meth:`Store.ensure_writable` writes ``ckpt-store.json``),
so a command that only reads, or that asks a running loop for something (``request-save``),
finds that file or says plainly that nothing is there.
"""

from __future__ import annotations

from ..errors import StoreError, StoreNotFoundError
from .store import STORE_FILE, Store

__all__ = ["is_store", "nothing_there", "require_store"]


def is_store(store: Store) -> bool:
    return store.backend.exists(STORE_FILE)


def nothing_there(store: Store) -> bool:
    """No store and nothing else either: the path (or bucket prefix) is empty or absent."""
    return not is_store(store) and not [n for n in store.backend.listdir("")
                                        if not n.startswith(".")]


def require_store(store: Store, *, fix: str) -> None:
    """Raise unless ``store`` is a store; ``fix`` says how to point at the right one."""
    if is_store(store):
        return
    if nothing_there(store):
        raise StoreNotFoundError(f"no store at {store.url!r}: nothing is there", url=store.url,
                                 hint=fix)
    raise StoreError(f"{store.url!r} is not a ckpt_notebook store (no {STORE_FILE})",
                     url=store.url, hint=fix)
