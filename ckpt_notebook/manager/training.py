"""What ``Checkpointer.step()`` keeps: the save schedule and the metric history."""

from __future__ import annotations

import math
import secrets
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .. import retention
from ..errors import InvalidArgumentError
from ..storage import Store
from .committing import is_full

__all__ = ["History", "Schedule"]


@dataclass
class Schedule:
    """Save every N steps and/or every T seconds (whichever comes first)."""

    every_steps: int | None = None
    every_seconds: float | None = None
    last_step: int | None = None
    last_time: float = field(default_factory=time.monotonic)

    @classmethod
    def parse(cls, every: int | float | str | None) -> Schedule:
        """``500`` (steps), ``"500"``, ``"10min"``, ``"90s"``; ``None``: never."""
        if every is None:
            return cls()
        if isinstance(every, bool):
            raise InvalidArgumentError("every must be a number of steps or a duration like "
                                       "'10min'")
        if isinstance(every, (int, float)) or str(every).strip().isdigit():
            steps = int(every)
            if steps < 1:
                raise InvalidArgumentError(f"every={every!r}: a step interval must be at least 1")
            return cls(every_steps=steps)
        return cls(every_seconds=retention.parse_duration(str(every)))

    @property
    def active(self) -> bool:
        return self.every_steps is not None or self.every_seconds is not None

    def due(self, step: int | None, now: float) -> bool:
        if self.every_steps is not None and step is not None and step > 0 \
                and step % self.every_steps == 0 and step != self.last_step:
            return True
        return self.every_seconds is not None and now - self.last_time >= self.every_seconds

    def mark(self, step: int | None, now: float) -> None:
        self.last_step, self.last_time = step, now

    def describe(self) -> str:
        parts = []
        if self.every_steps is not None:
            parts.append(f"every {self.every_steps} steps")
        if self.every_seconds is not None:
            parts.append(f"every {retention.format_duration(self.every_seconds)}")
        return " or ".join(parts) or "off"


class History:
    """Metric history of one run, written to the store in segments (cheap per call)."""

    FLUSH_EVERY_S = 5.0

    def __init__(self, store: Store, run: str) -> None:
        self.store = store
        self.run = run
        self.latest: dict[str, float] = {}
        self.last_step: int | None = None
        self._rows: list[dict[str, Any]] = []
        self._segment = self._new_segment_name()
        self._dirty = False
        # the first step() writes at once: a running loop's store then exists, so
        # `ckpt request-save` (which refuses a path that is no store) can reach it
        self._last_flush = float("-inf")
        self._told_full = False

    @staticmethod
    def _new_segment_name() -> str:
        return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"

    def record(self, step: int | None, metrics: dict[str, float | None],
               epoch: int | None = None) -> None:
        for key, value in metrics.items():
            if value is not None and math.isfinite(value):
                self.latest[key] = value
        self.last_step = step
        row: dict[str, Any] = {"step": step, "time": time.time(), "metrics": metrics}
        if epoch is not None:
            row["epoch"] = epoch
        self._rows.append(row)
        self._dirty = True

    def metrics_at(self, step: int | None) -> dict[str, float]:
        """The metrics a save at ``step`` carries when not told any: those :meth:`record`
        last recorded, if it last recorded this very step (else none)."""
        return dict(self.latest) if step is not None and step == self.last_step else {}

    def flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last_flush < self.FLUSH_EVERY_S):
            return
        self._last_flush = now
        try:
            self.store.ensure_writable()
            self.store.history.write_segment(self.run, self._segment, self._rows)
        except OSError as err:
            if not is_full(err):
                raise
            # Metrics are worth less than the training loop that records them: on a full
            # disk they stay in memory, are written at a later flush, and the user is told once.
            if not self._told_full:
                warnings.warn(f"metric history of run {self.run!r} is not written: store "
                              f"{self.store.url} is full; it is kept in memory and written "
                              "once there is space", RuntimeWarning, stacklevel=3)
                self._told_full = True
            return
        self._told_full = False
        self._dirty = False
        if len(self._rows) >= self.store.history.SEGMENT_ROWS:
            self._rows = []
            self._segment = self._new_segment_name()
