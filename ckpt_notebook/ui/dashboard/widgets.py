"""Small pieces the dashboard's views share: text as escaped HTML, the feedback line shown next
to an action, buttons and confirmation rows, wrapping rows, and :class:`UiLoop`.

Everything users wrote (tags, metric, run and notebook names, error messages that quote them)
reaches the page as text: through :func:`text_pane` / :func:`pre` (``html.escape`` in a
``<pre>``; Panel's own ``Str`` pane un-escapes in the browser, so it is not used).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd  # type: ignore[import-untyped]  # no stubs in the dev env
import panel as pn

from .model import Outcome

__all__ = ["COLOR", "Feedback", "UiLoop", "button", "label", "pre", "small_table", "text_pane",
           "wrap_row"]

# Panel 1.9 renames widget ``name`` to ``label`` and ``button_type`` to ``color``; 1.4 has
# only the old names.
_LABEL = "label" if "label" in pn.widgets.Button.param else "name"
COLOR = "color" if "color" in pn.widgets.Button.param else "button_type"


def label(text: str) -> dict[str, str]:
    return {_LABEL: text}


class UiLoop:
    """Runs UI updates on the thread that owns the Bokeh document (thread-safe)."""

    def __init__(self, doc: Any = None) -> None:
        self.doc = doc if doc is not None and doc.session_context is not None else None
        self.thread = threading.get_ident()
        self.closed = False

    @classmethod
    def current(cls) -> UiLoop:
        return cls(pn.state.curdoc)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.closed:
            return
        if self.doc is None or threading.get_ident() == self.thread:
            fn(*args)
        else:
            try:
                self.doc.add_next_tick_callback(partial(fn, *args))
            except Exception:  # the session is gone
                self.closed = True


def pre(text: str, max_height: int | None = None) -> str:
    """Plain text as HTML: escaped, in a <pre> that wraps (and scrolls past max_height)."""
    scroll = f"max-height:{max_height}px;overflow:auto;" if max_height else ""
    return (f"<pre style='margin:0;white-space:pre-wrap;font-size:12.5px;{scroll}'>"
            f"{html.escape(text)}</pre>")


def text_pane(text: str = "", **params: Any) -> pn.pane.HTML:
    return pn.pane.HTML(pre(text), **params)


_FEEDBACK_STYLE = {
    "error": "color:#8a1010;background:#fdecea;border-left:4px solid #c62828",
    "ok": "color:#1b4d1e;background:#edf7ed;border-left:4px solid #2e7d32",
    "busy": "color:#333;background:#f2f2f2;border-left:4px solid #999",
}


class Feedback:
    """One line under an action's buttons saying what the last action there did: an error in
    red, a success in green, work in progress in grey. Each new outcome replaces the last;
    :meth:`clear` empties it (another checkpoint was selected, the result is stale)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pane = pn.pane.HTML("", sizing_mode="stretch_width", margin=(2, 5))
        self.kind = ""
        self.text = ""

    def show(self, outcome: Outcome) -> None:
        self._set("ok" if outcome.ok else "error",
                  ("" if outcome.ok else "Error: ") + outcome.message)

    def busy(self, text: str) -> None:
        self._set("busy", text)

    def clear(self) -> None:
        self.kind, self.text = "", ""
        self.pane.object = ""

    def _set(self, kind: str, text: str) -> None:
        self.kind, self.text = kind, text
        role = "alert" if kind == "error" else "status"
        self.pane.object = (
            f"<div class='ckpt-feedback ckpt-feedback-{kind}' data-for='{self.name}' "
            f"role='{role}' style='{_FEEDBACK_STYLE[kind]};padding:4px 8px;"
            f"white-space:pre-wrap;overflow-wrap:anywhere;font-size:13px'>"
            f"{html.escape(text)}</div>")


def button(text: str, handler: Callable[[], None], kind: str = "default", **params: Any,
           ) -> pn.widgets.Button:
    btn = pn.widgets.Button(**label(text), **{COLOR: kind}, align="end", **params)
    btn.on_click(lambda _e: handler())
    return btn


def wrap_row(*objects: Any, **params: Any) -> pn.FlexBox:
    """A row that wraps onto more lines when its container is narrow (a notebook cell)
    instead of spilling out sideways."""
    options = {"flex_wrap": "wrap", "align_items": "flex-end", "sizing_mode": "stretch_width",
               **params}
    return pn.FlexBox(*objects, **options)


def small_table(rows: list[dict[str, Any]], columns: list[str]) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(pd.DataFrame(rows, columns=columns), disabled=True,
                                show_index=False, selectable=False, layout="fit_data_table",
                                sizing_mode="stretch_width", max_height=260)
