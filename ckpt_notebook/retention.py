"""Pure functions over checkpoint metadata: which checkpoint is latest, which is best.

Imports only :mod:`ckpt_notebook.types`; no I/O, so every rule is testable from a table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from .types import CheckpointInfo

__all__ = ["Mode", "best", "latest", "metric_mode", "parse_best_ref"]

Mode = Literal["min", "max"]
_LOWER_IS_BETTER = ("loss", "error", "err", "perplexity", "ppl", "mse", "mae", "rmse")


def metric_mode(metric: str) -> Mode:
    """``min`` for metrics that read as losses or errors, else ``max``."""
    lowered = metric.lower()
    return "min" if any(word in lowered for word in _LOWER_IS_BETTER) else "max"


def parse_best_ref(ref: str) -> tuple[str, Mode] | None:
    """``best.val_loss`` -> ``("val_loss", "min")``; ``best.acc:max``; else ``None``."""
    if not ref.startswith("best.") or len(ref) <= len("best."):
        return None
    metric, _, mode = ref[len("best."):].partition(":")
    if mode not in ("", "min", "max"):
        raise ValueError(f"bad REF {ref!r}: the mode after ':' must be 'min' or 'max'")
    return metric, (mode or metric_mode(metric))  # type: ignore[return-value]


def _usable(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def latest(infos: Iterable[CheckpointInfo]) -> CheckpointInfo | None:
    """The newest training-state checkpoint (named ones included, file copies not)."""
    states = [i for i in infos if i.kind == "state"]
    return max(states, key=lambda i: (i.created, i.id), default=None)


def best(infos: Iterable[CheckpointInfo], metric: str, mode: Mode | None = None,
         ) -> CheckpointInfo | None:
    """The checkpoint with the best finite ``metric``; ties go to the newest."""
    mode = mode or metric_mode(metric)
    scored = [i for i in infos if _usable(i.metrics.get(metric))]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda i: (sign * float(i.metrics[metric] or 0.0), i.created, i.id))
