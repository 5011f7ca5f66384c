"""Tables that render as HTML in notebooks and as aligned text in terminals.

Everything users wrote (tags, metric names, run and notebook names) is escaped in HTML.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..storage.manifest import SavedObject
from ..types import CheckpointInfo, format_bytes

__all__ = ["Table", "checkpoint_table", "format_metrics", "format_table", "object_summary",
           "short_time"]


class Table:
    """A titled table; ``display(Table(...))`` shows HTML in Jupyter, text in IPython."""

    def __init__(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                 title: str = "", note: str = "") -> None:
        self.columns = list(columns)
        self.rows = [[_cell(v) for v in row] for row in rows]
        self.title = title
        self.note = note

    def __str__(self) -> str:
        if not self.rows:
            return "\n".join(x for x in (self.title, self.note or "(none)") if x)
        table = format_table(self.columns, self.rows)
        return "\n".join(x for x in (self.title, table, self.note) if x)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        esc = html.escape
        head = "".join(f"<th style='text-align:left'>{esc(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{esc(v)}</td>"
                                        for v in r) + "</tr>" for r in self.rows)
        title = f"<b>{esc(self.title)}</b>" if self.title else ""
        note = f"<div><small>{esc(self.note)}</small></div>" if self.note else ""
        if not self.rows:
            return f"<div>{title}<div>{esc(self.note or '(none)')}</div></div>"
        return (f"<div class='ckpt-table'>{title}<table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{note}</div>")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def short_time(created: str) -> str:
    """``2024-05-01T12:00:00.123456+00:00`` -> ``2024-05-01 14:00:00`` in local time."""
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return created or "-"
    if when.tzinfo is not None:
        when = when.astimezone()
    return f"{when:%Y-%m-%d %H:%M:%S}"


def format_metrics(metrics: Any) -> str:
    """``loss=0.1594 acc=0.91``; ``-`` for none."""
    parts = [f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={'-' if v is None else v}"
             for k, v in metrics.items()]
    return " ".join(parts) or "-"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 right: Sequence[int] = ()) -> str:
    """A plain-text table; columns listed in ``right`` are right-aligned."""
    widths = [max(len(str(r[c])) for r in (header, *rows)) for c in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [str(v).rjust(w) if c in right else str(v).ljust(w)
                 for c, (v, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def object_summary(name: str, obj: SavedObject) -> dict[str, Any]:
    """One saved object of a manifest: its kind, type, tensor count and bytes."""
    return {"name": name, "kind": obj.kind, "type": obj.type, "tensors": len(obj.tensors),
            "bytes": obj.nbytes}


def checkpoint_table(infos: Sequence[CheckpointInfo], status: Mapping[str, Any] | None = None,
                     *, title: str = "") -> Table:
    """The checkpoint list every UI shows, newest first (``infos`` come oldest first, as
    ``Store.list()`` gives them): id, step, metrics, sizes, retention status."""
    metrics = sorted({k for i in infos for k in i.metrics})
    columns = ["id", "run", "step", "created", *metrics, "size", "new", "status"]
    rows = []
    for i in reversed(infos):
        st = status.get(i.id) if status else None
        rows.append([i.id, i.run, i.step, short_time(i.created),
                     *(i.metrics.get(m) for m in metrics), format_bytes(i.logical_bytes),
                     format_bytes(i.new_bytes), getattr(st, "label", "")])
    return Table(columns, rows, title=title, note="" if infos else "no checkpoints yet")
