"""What the metric plots draw, as plain columns (no Bokeh here, so the model that uses it stays
testable without a browser): one entry per metric, holding a line per run and a marker per
checkpoint, on a step or wall-clock x axis, optionally smoothed and for a log y axis.

Smoothing is TensorBoard's: an exponential moving average with weight ``alpha`` on the previous
value, debiased so the first points are not pulled towards zero. The markers keep the raw
values (a checkpoint holds what was measured, not a trend).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = ["X_AXES", "metric_plots", "smooth", "to_ms"]

X_AXES = ("step", "time")
Columns = dict[str, list[Any]]
MARK_COLUMNS = ("x", "y", "id", "run", "step", "status", "best")


def smooth(values: Sequence[float], alpha: float) -> list[float]:
    """The debiased exponential moving average of ``values`` (``alpha`` 0: unchanged)."""
    if alpha <= 0:
        return list(values)
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        avg = alpha * avg + (1 - alpha) * v
        weight = alpha * weight + (1 - alpha)
        out.append(avg / weight)
    return out


def to_ms(created: str | float | None) -> float | None:
    """An ISO timestamp or epoch seconds as epoch milliseconds (Bokeh's datetime axis)."""
    if created is None or created == "":
        return None
    if isinstance(created, int | float):
        return float(created) * 1000.0
    try:
        return datetime.fromisoformat(created).timestamp() * 1000.0
    except ValueError:
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _points(rows: Iterable[Mapping[str, Any]], x_axis: str) -> dict[str, list[tuple[float, float,
                                                                                     int]]]:
    """``{metric: [(x, value, step)]}`` from history rows, ordered by x."""
    out: dict[str, list[tuple[float, float, int]]] = {}
    for row in rows:
        step = row.get("step")
        x = step if x_axis == "step" else to_ms(row.get("time"))
        if x is None or step is None:
            continue
        for key, value in (row.get("metrics") or {}).items():
            if _finite(value):
                out.setdefault(key, []).append((float(x), float(value), int(step)))
    for points in out.values():
        points.sort(key=lambda p: p[0])
    return out


def _mark_x(mark: Mapping[str, Any], x_axis: str) -> float | None:
    return mark.get("step") if x_axis == "step" else to_ms(mark.get("created"))


def metric_plots(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                 marks: Sequence[Mapping[str, Any]], *, x_axis: str = "step",
                 smoothing: float = 0.0, log: bool = False) -> dict[str, dict[str, Any]]:
    """``{metric: {"lines": {run: {"x", "y", "raw", "step"}}, "marks": {x, y, id, run, step,
    status, best}, "dropped": n}}``.

    ``histories``: each plotted run's history rows (``MetricHistory.read``); ``marks``: its
    checkpoints (``id, run, step, created, metrics, status, best_of``). A metric saved only
    with checkpoints (no ``step()`` history) is drawn through its checkpoints. ``log``: values
    that are not positive cannot be drawn on a log axis; they are left out and counted in
    ``dropped``.
    """
    if x_axis not in X_AXES:
        raise ValueError(f"x axis {x_axis!r} is not one of {', '.join(X_AXES)}")
    per_run = {run: _points(rows, x_axis) for run, rows in histories.items()}
    in_history = {run: set(points) for run, points in per_run.items()}
    for mark in marks:  # metrics known only from checkpoints still get a line
        x = _mark_x(mark, x_axis)
        run_points = per_run.setdefault(mark["run"], {})
        for key, value in (mark.get("metrics") or {}).items():
            if x is not None and _finite(value) and key not in in_history.get(mark["run"], ()):
                run_points.setdefault(key, []).append((float(x), float(value), mark["step"]))
    metrics = sorted({m for points in per_run.values() for m in points}
                     | {m for mark in marks for m in (mark.get("metrics") or {})
                        if _finite(mark["metrics"][m])})
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        dropped = 0
        lines: dict[str, Columns] = {}
        for run in sorted(per_run):
            points = sorted(per_run[run].get(metric, ()), key=lambda p: p[0])
            if log:
                dropped += sum(1 for p in points if p[1] <= 0)
                points = [p for p in points if p[1] > 0]
            if points:
                raw = [p[1] for p in points]
                lines[run] = {"x": [p[0] for p in points], "y": smooth(raw, smoothing),
                              "raw": raw, "step": [p[2] for p in points]}
        mark_cols, mark_dropped = _marks_of(metric, marks, per_run, x_axis, log)
        out[metric] = {"lines": lines, "marks": mark_cols, "dropped": dropped + mark_dropped}
    return out


def _marks_of(metric: str, marks: Sequence[Mapping[str, Any]],
              per_run: Mapping[str, Mapping[str, list[tuple[float, float, int]]]], x_axis: str,
              log: bool) -> tuple[Columns, int]:
    out: Columns = {c: [] for c in MARK_COLUMNS}
    dropped = 0
    for mark in marks:
        at_step = {p[2]: p[1] for p in per_run.get(mark["run"], {}).get(metric, ())}
        value: Any = (mark.get("metrics") or {}).get(metric, at_step.get(mark["step"]))
        x = _mark_x(mark, x_axis)
        if not _finite(value) or x is None:
            continue
        y = float(value)
        if log and y <= 0:
            dropped += 1
            continue
        for column, item in zip(MARK_COLUMNS, (float(x), y, mark["id"], mark["run"],
                                               mark["step"], mark.get("status", ""),
                                               metric in mark.get("best_of", ())), strict=True):
            out[column].append(item)
    return out, dropped
