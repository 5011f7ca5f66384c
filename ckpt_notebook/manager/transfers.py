"""What copying and materializing share: progress metering, parallel work, opening stores."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ..storage import Store
from ..storage.blobs import parallel_map
from ..types import Progress

__all__ = ["Meter", "open_store", "parallel"]


def open_store(store: str | os.PathLike[str] | Store | None) -> Store:
    return store if isinstance(store, Store) else Store(store)



class Meter:
    """Thread-safe byte counter feeding a progress callback (called with the lock held, so
    it sees ``done`` only grow; callbacks are cheap: the bars throttle themselves)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:  # callbacks in order: a bar never steps back
            self.done += n
            if self.progress is not None:
                self.progress(self.done, self.total)



def parallel(dest: Store, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """In parallel, in order; the first failure stops the rest (a dead store fails fast)."""
    return parallel_map(fn, items, dest.blobs.workers, name="ckpt-copy")
