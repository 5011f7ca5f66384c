"""Tables that render as HTML in notebooks and as aligned text in terminals.

Everything users wrote (tags, metric names, run and notebook names) is escaped in HTML.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..types import CheckpointInfo, format_bytes

__all__ = ["Table", "checkpoint_table", "short_time"]


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
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        line = "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
        body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                for r in self.rows]
        return "\n".join(x for x in (self.title, line.rstrip(), *body, self.note) if x)

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


def short_time(iso: str) -> str:
    """``2026-11-23T07:06:50.123+00:00`` -> ``2026-11-23 07:06:50`` in local time."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


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
