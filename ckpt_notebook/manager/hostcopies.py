"""Host copies of tracked tensors, kept between saves so an unchanged tensor is neither
hashed nor written again (see :class:`~ckpt_notebook.manager.Checkpointer`'s ``host_copy``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["HostCopies", "buffer_key", "make_pool"]


class HostCopies:
    """Refreshes the host copies of a synchronous save on a thread of their own, so the
    copying overlaps the store's hashing and writing."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._copies: dict[tuple[str, str], Future[None]] = {}

    def refresh(self, key: tuple[str, str], mirror: Any) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ckpt-copy")
        self._copies[key] = self._executor.submit(mirror.refresh)

    def check(self, key: tuple[str, str], mirror: Any, digest: str) -> Callable[[], str | None]:
        """For the store's hashing thread: ``digest`` if the tensor still matches its copy,
        else None (hash it), and the copy is refreshed."""
        def vouch() -> str | None:
            if mirror.matches():
                return digest
            self.refresh(key, mirror)
            return None
        return vouch

    def finish(self) -> set[tuple[str, str]]:
        """Wait for every refresh; returns the keys whose copy may be stale or torn."""
        if self._executor is None:
            return set()
        self._executor.shutdown(wait=True)
        return {key for key, f in self._copies.items() if f.cancelled() or f.exception()}


def buffer_key(key: tuple[str, str], entry: Any) -> tuple[Any, ...]:
    """Which pool buffer a tensor entry came from: the pool keeps one per path, dtype,
    shape and kind of memory (pinned for GPU tensors)."""
    return (*key, entry.data.dtype, entry.data.shape, entry.device)


def make_pool() -> Any:
    if "torch" not in sys.modules:
        return None
    from ..capture.torch import BufferPool

    return BufferPool()
