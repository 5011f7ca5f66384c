"""Transfer progress for people: bytes, rate and ETA as an ipywidgets bar in notebooks and a
tqdm bar in terminals (nothing when output is not interactive), and the :class:`Throttle`
that keeps every bar drawn in a browser (the notebook bar here, the checkpoint widget's, the
dashboard's) to a few updates a second."""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..types import Progress, format_bytes

__all__ = ["INTERVAL_S", "Throttle", "progress_bar", "rate_text"]

INTERVAL_S = 0.1  # at most ~10 progress updates a second reach the browser


class Throttle:
    """Lets a ``(done, total)`` update through at most once per ``interval_s``; the last
    one (``done >= total``) always. Thread-safe: transfers report from worker threads."""

    def __init__(self, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self._clock = interval_s, clock
        self._last = -math.inf
        self._lock = threading.Lock()

    def due(self, done: int, total: int) -> float | None:
        """The clock's time if this update should show (it counts as shown), else None."""
        now = self._clock()
        with self._lock:
            if done < total and now - self._last < self.interval_s:
                return None
            self._last = now
        return now

    def reset(self) -> None:
        """Let the next update through (a new transfer starts)."""
        with self._lock:
            self._last = -math.inf


def rate_text(done: int, total: int, elapsed: float) -> str:
    """``'12.0 MiB / 100.0 MiB  3.1 MiB/s  ETA 28s'``"""
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 and total >= done else None
    eta_text = f"  ETA {eta:.0f}s" if eta is not None and done < total else ""
    return (f"{format_bytes(done)} / {format_bytes(total)}  "
            f"{format_bytes(int(rate))}/s{eta_text}")


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


@contextlib.contextmanager
def progress_bar(description: str, *, enabled: bool | None = None) -> Iterator[Progress | None]:
    """Yield a ``(done, total)`` callback drawing a bar, or ``None`` when not interactive."""
    if enabled is False:
        yield None
    elif _in_notebook():
        with _widget_bar(description) as cb:
            yield cb
    elif enabled or sys.stderr.isatty():
        with _tqdm_bar(description) as cb:
            yield cb
    else:
        yield None


@contextlib.contextmanager
def _widget_bar(description: str) -> Iterator[Progress]:
    import ipywidgets as widgets
    from IPython.display import display

    bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description=description[:20])
    label = widgets.Label("")
    display(widgets.HBox([bar, label]))
    start = time.monotonic()
    throttle = Throttle()

    def update(done: int, total: int) -> None:
        now = throttle.due(done, total)  # set value traits only, at most ten times a second
        if now is None:
            return
        bar.value = done / total if total else 1.0
        label.value = rate_text(done, total, now - start)

    yield update
    bar.bar_style = "success"


@contextlib.contextmanager
def _tqdm_bar(description: str) -> Iterator[Progress]:
    from tqdm import tqdm

    # tqdm's own byte units say "MB" for MiB; the rest of ckpt says MiB, so the numbers are
    # ours (rate_text) and tqdm draws only the bar.
    bar: Any = tqdm(total=0, desc=description, leave=True,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
    start = time.monotonic()
    lock = threading.Lock()

    def update(done: int, total: int) -> None:
        with lock:
            bar.total = total
            bar.set_postfix_str(rate_text(done, total, time.monotonic() - start), refresh=False)
            bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
