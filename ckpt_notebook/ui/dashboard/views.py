"""The dashboard's Panel views: they render a :class:`DashboardModel` and call its actions.

Everything users wrote (tags, metric, run and notebook names, error messages that quote
them) reaches the page as text: table cells through Tabulator's string formatter, the rest
through :func:`text_pane` (``html.escape`` in a ``<pre>``; Panel's own ``Str`` pane
un-escapes in the browser, so it is not used); plots draw text on a canvas.

Threads: background work (copy, verify, prune, the storage summary, the store watcher's
reloads) never touches widgets directly; it hands UI updates to :class:`UiLoop`, which runs
them on the Bokeh document's event loop (or directly where there is none, in a notebook).
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

import pandas as pd  # type: ignore[import-untyped]  # no stubs in the dev env
import panel as pn
from bokeh.models.widgets.tables import NumberFormatter

from ...types import format_bytes
from .model import DashboardModel, Outcome
from .plots import RunPlot

__all__ = ["DashboardView", "UiLoop", "text_pane"]

PAGE_SIZE = 15
ALL_RUNS, ALL_TAGS = "all runs", "all tags"
SUMMARY_DELAY_S = 0.5  # after a live update, let the table and plot reach the page first
MAX_PLOTTED_RUNS = 8
_PROGRESS_INTERVAL_S = 0.1
_COPY_JS = """
const label = btn.label
const show = (text) => { btn.label = text; setTimeout(() => { btn.label = label }, 2000) }
navigator.clipboard.writeText(line.value).then(
  () => show('Copied'), () => show('Select the line and copy it'))
"""
# Panel 1.9 renames widget ``name`` to ``label`` and ``button_type`` to ``color``; 1.4 has
# only the old names.
_LABEL = "label" if "label" in pn.widgets.Button.param else "name"
_COLOR = "color" if "color" in pn.widgets.Button.param else "button_type"


def _label(text: str) -> dict[str, str]:
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


def _pre(text: str, max_height: int | None = None) -> str:
    """Plain text as HTML: escaped, in a <pre> that wraps (and scrolls past max_height)."""
    scroll = f"max-height:{max_height}px;overflow:auto;" if max_height else ""
    return (f"<pre style='margin:0;white-space:pre-wrap;font-size:12.5px;{scroll}'>"
            f"{html.escape(text)}</pre>")


def text_pane(text: str = "", **params: Any) -> pn.pane.HTML:
    return pn.pane.HTML(_pre(text), **params)


def _text(value: Any) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _frame(model: DashboardModel) -> pd.DataFrame:
    """The table's rows; sizes as numbers of bytes so that they sort as numbers."""
    rows = model.rows()
    by_id = {i.id: i for i in model.infos}
    metric_cols = [f"metric: {m}" for m in model.metric_names]
    columns = ["id", "name", "run", "step", "created", *metric_cols, "size", "new", "status",
               "pinned", "verified", "tags", "kind"]
    for row in rows:
        info = by_id[row["id"]]
        row["size"], row["new"] = info.logical_bytes, info.new_bytes
    df = pd.DataFrame(rows, columns=columns)
    for col in ("step", "size", "new", *metric_cols):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _bytes_formatter() -> NumberFormatter:
    """``2.6 KiB`` from a number of bytes (a new Bokeh model per page: models belong to one
    document)."""
    return NumberFormatter(format="0.[0] b", nan_format="-", text_align="right")


def _small_table(rows: list[dict[str, Any]], columns: list[str]) -> pn.widgets.Tabulator:
    return pn.widgets.Tabulator(pd.DataFrame(rows, columns=columns), disabled=True,
                                show_index=False, selectable=False, layout="fit_data_table",
                                sizing_mode="stretch_width", max_height=260)


class DashboardView:
    """The whole page for one model; :attr:`panel` is what gets served or displayed."""

    def __init__(self, model: DashboardModel, *, loop: UiLoop | None = None,
                 notifications: Any = None, defer: bool = False) -> None:
        """``defer``: the page starts with the table only; :meth:`load_rest` (called once
        the page is on screen) adds the plots, details and storage sections."""
        self.model = model
        self.loop = loop or UiLoop()
        self.notifications = notifications
        self.loaded = False
        self._summary_lock = threading.Lock()
        self._summary_state = "idle"  # idle | running | dirty
        self._run_plots: dict[str, RunPlot] = {}
        self._plot_boxes: dict[str, pn.Column] = {}
        self._changes: set[str] = set()
        self._changes_lock = threading.Lock()
        self._build_widgets()
        self.panel = self._layout()
        self._render_table()
        self._render_selected()
        for name in ("version", "run_filter", "tag_filter", "selected"):
            model.param.watch(partial(self._from_model, name), name)
        if not defer:
            self.load_rest()

    def load_rest(self) -> None:
        """Add everything below the table (UI thread), and start the storage summary."""
        if self.loaded:
            return
        self.loaded = True
        self._render_plots()
        self.lower.objects = self._lower_sections()
        self.refresh_summary()

    # -- building -------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        m = self.model
        self.run_select = pn.widgets.Select(**_label("Run"), width=200)
        self.tag_select = pn.widgets.Select(**_label("Tag"), width=200)
        self._set_filter_options()
        self.run_select.param.watch(lambda e: setattr(m, "run_filter", e.new), "value")
        self.tag_select.param.watch(lambda e: setattr(m, "tag_filter", e.new), "value")
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(), pagination="remote", page_size=PAGE_SIZE, selectable=1,
            disabled=True, show_index=False, hidden_columns=["name"], layout="fit_data_fill",
            sizing_mode="stretch_width", titles=self._titles(),
            widths={"status": 230, "tags": 220},
            formatters={"size": _bytes_formatter(), "new": _bytes_formatter(),
                        "pinned": {"type": "tickCross", "crossElement": False}})
        self.table.param.watch(self._on_selection, "selection")
        self.plots = pn.Tabs(dynamic=True, sizing_mode="stretch_width")
        self.plots.param.watch(self._fill_plot, "active")
        self.status_line = text_pane("", styles={"color": "#555"}, sizing_mode="stretch_width")
        self.summary = text_pane("storage: computing...", sizing_mode="stretch_width")
        self.request_btn = self._button("Request save", self._on_request_save, "primary")
        self.preview_btn = self._button("Prune preview", self._on_prune_preview)
        self.prune_btn = self._button("Prune now...", self._on_prune_ask, "warning")
        self.prune_confirm, self.prune_question = self._confirm_row("Prune now", self._on_prune)
        # the selected checkpoint
        self.details = text_pane("Select a checkpoint in the table.",
                                   sizing_mode="stretch_width")
        self.objects = pn.Column(sizing_mode="stretch_width")  # tables made on selection
        self.metadata = text_pane("", sizing_mode="stretch_width")
        self.restore_line = pn.widgets.TextInput(**_label("Restore line"), width=360)
        self.copy_line_btn = pn.widgets.Button(**_label("Copy restore line"), width=160,
                                               align="end")
        self.copy_line_btn.js_on_click(args={"line": self.restore_line,
                                             "btn": self.copy_line_btn}, code=_COPY_JS)
        self.pin_btn = self._button("Pin", self._on_pin)
        self.unpin_btn = self._button("Unpin", self._on_unpin)
        self.verify_btn = self._button("Verify", self._on_verify)
        self.delete_btn = self._button("Delete...", self._on_delete_ask, "danger")
        # named and pinned checkpoints are deleted only with "force" ticked, as in the CLI
        self.delete_force = pn.widgets.Checkbox(**_label("force (named or pinned)"),
                                                value=False, align="center")
        self.delete_confirm, self.delete_question = self._confirm_row(
            "Delete", self._on_delete, self.delete_force)
        self.copy_name = pn.widgets.TextInput(**_label("Named checkpoint"),
                                              placeholder="e.g. baseline-v1", width=220)
        self.copy_dest = pn.widgets.TextInput(**_label("Destination store (empty: this one)"),
                                              placeholder="/path or s3://bucket/prefix",
                                              width=300)
        self.copy_btn = self._button("Copy to name", self._on_copy, "primary")
        self.copy_progress = pn.indicators.Progress(value=0, max=1000, width=240,
                                                    visible=False, align="center")
        self.copy_rate = text_pane("", align="center")
        self.compare = pn.widgets.TextInput(**_label("Compare with (REF)"), width=300,
                                            placeholder="id, name, latest, best.loss")
        self.diff_btn = self._button("Diff", self._on_diff)
        self.diff_text = text_pane("", sizing_mode="stretch_width")
        self.diff_table = pn.Column(sizing_mode="stretch_width")

    def _button(self, label: str, handler: Callable[[], None], kind: str = "default",
                ) -> pn.widgets.Button:
        btn = pn.widgets.Button(**_label(label), **{_COLOR: kind}, align="end")
        btn.on_click(lambda _e: self._guard(handler))
        return btn

    def _confirm_row(self, label: str, handler: Callable[[], None], *extra: Any,
                     ) -> tuple[pn.Column, pn.pane.HTML]:
        """The question on one line, then ``extra`` (a "force" box), yes and cancel."""
        text = text_pane("", sizing_mode="stretch_width")
        yes = self._button(f"Yes, {label.lower()}", handler, "danger")
        no = pn.widgets.Button(**_label("Cancel"), align="end")
        box = pn.Column(text, pn.Row(*extra, yes, no), visible=False,
                        sizing_mode="stretch_width", styles={"background": "#fff3f3"})
        no.on_click(lambda _e: setattr(box, "visible", False))
        return box, text

    def _layout(self) -> pn.Column:
        store = html.escape(self.model.store_url)
        header = pn.Row(
            pn.pane.HTML(f"<h2 style='margin:0'>ckpt_notebook checkpoints</h2>"
                         f"<code>{store}</code>", sizing_mode="stretch_width"),
            self.request_btn, sizing_mode="stretch_width")
        self.lower = pn.Row(sizing_mode="stretch_width")
        return pn.Column(
            header,
            pn.Row(self.run_select, self.tag_select, self.status_line,
                   sizing_mode="stretch_width"),
            self.table, self.lower, sizing_mode="stretch_width", styles={"padding": "0 12px"})

    def _lower_sections(self) -> list[pn.Column]:
        selected = pn.Card(
            self.details,
            pn.Row(self.restore_line, self.copy_line_btn),
            pn.Row(self.pin_btn, self.unpin_btn, self.verify_btn, self.delete_btn),
            self.delete_confirm,
            pn.Row(self.copy_name, self.copy_dest, self.copy_btn),
            pn.Row(self.copy_progress, self.copy_rate),
            self.objects,
            pn.pane.HTML("<b>Metadata</b>"), self.metadata,
            title="Selected checkpoint", sizing_mode="stretch_width", collapsible=False)
        diff = pn.Card(pn.Row(self.compare, self.diff_btn), self.diff_text, self.diff_table,
                       title="Diff (which tensors changed)", sizing_mode="stretch_width",
                       collapsible=False)
        storage = pn.Card(self.summary, pn.Row(self.preview_btn, self.prune_btn),
                          self.prune_confirm, title="Storage", sizing_mode="stretch_width",
                          collapsible=False)
        return [pn.Column(pn.Card(self.plots, title="Metrics", collapsible=False,
                                  sizing_mode="stretch_width"), storage, diff,
                          sizing_mode="stretch_width"),
                pn.Column(selected, sizing_mode="stretch_width")]

    def _titles(self) -> dict[str, str]:
        # Tabulator puts titles into the page as HTML: escape the metric names in them.
        return {f"metric: {m}": html.escape(m) for m in self.model.metric_names}

    def _set_filter_options(self) -> None:
        m = self.model
        self.run_select.options = {ALL_RUNS: "", **{r: r for r in m.runs if r != ALL_RUNS}}
        self.tag_select.options = {ALL_TAGS: "", **{t: t for t in m.tags if t != ALL_TAGS}}
        self.run_select.value = m.run_filter if m.run_filter in m.runs else ""
        self.tag_select.value = m.tag_filter if m.tag_filter in m.tags else ""

    # -- rendering ------------------------------------------------------------------------
    def _from_model(self, name: str, _event: Any) -> None:
        """Model changes (any thread) are rendered on the UI thread; a burst of them (many
        saves at once) is rendered once."""
        with self._changes_lock:
            first = not self._changes
            self._changes.add(name)
        if first:
            self.loop.call(self._render_changes)

    def _render_changes(self) -> None:
        with self._changes_lock:
            names, self._changes = self._changes, set()
        if "version" in names:
            self._render_version()
            return
        if names & {"run_filter", "tag_filter"}:
            self._render_table()
        if "run_filter" in names and self.loaded:
            self._render_plots()
        if "selected" in names:
            self._render_selected()

    def _render_version(self) -> None:
        self._set_filter_options()
        self._render_table()
        self._render_selected()
        if self.loaded:
            self._render_plots()
            self.refresh_summary(delay=SUMMARY_DELAY_S)

    def _render_table(self) -> None:
        df = _frame(self.model)
        self.table.titles = self._titles()
        self.table.value = df
        ids = list(df["id"])
        sel = [ids.index(self.model.selected)] if self.model.selected in ids else []
        if self.table.selection != sel:
            self.table.selection = sel

    def _render_plots(self) -> None:
        """One tab per run (the run filter's, else the newest runs); only the tab on show
        builds its figure, the others when they are opened."""
        m = self.model
        newest: dict[str, int] = {}
        for n, info in enumerate(m.infos):
            if info.run:
                newest[info.run] = n
        runs = [m.run_filter] if m.run_filter else sorted(newest, key=lambda r: -newest[r])
        boxes = [self._plot_boxes.setdefault(run, pn.Column(name=run,
                                                             sizing_mode="stretch_width"))
                 for run in runs[:MAX_PLOTTED_RUNS]]
        if not boxes:
            boxes = [pn.Column(text_pane("no checkpoints with a run yet"), name="metrics")]
        if [b.name for b in boxes] != [b.name for b in self.plots.objects]:
            self.plots.objects = boxes
            self.plots.active = 0
        self._fill_plot()

    def _active_run(self) -> str | None:
        tabs = list(self.plots.objects)
        active = self.plots.active
        run = tabs[active].name if 0 <= active < len(tabs) else None
        return run if run in self._plot_boxes else None

    def _fill_plot(self, *_events: Any) -> None:
        run = self._active_run()
        if run is not None:
            self._show_plot(run, self.model.history(run))

    def _show_plot(self, run: str, history: dict[str, Any]) -> None:
        box = self._plot_boxes[run]
        plot = self._run_plots.get(run)
        if plot is not None and plot.update(history):
            if self.loop.doc is None and box.objects:  # notebooks: push the new data
                box.objects[0].param.trigger("object")
            return
        plot = self._run_plots[run] = RunPlot(run, history)
        box.objects = [pn.pane.Bokeh(plot.figure, sizing_mode="stretch_width")]

    def _render_selected(self) -> None:
        m = self.model
        ckpt = m.selected
        widgets = (self.pin_btn, self.unpin_btn, self.verify_btn, self.delete_btn,
                   self.copy_btn, self.diff_btn, self.copy_line_btn)
        for w in widgets:
            w.disabled = not ckpt
        self.delete_confirm.visible = False
        self.diff_text.object, self.diff_table.objects = "", []
        if not ckpt:
            self.details.object = _pre("Select a checkpoint in the table.")
            self.restore_line.value = ""
            self.objects.objects = []
            self.metadata.object = _pre("")
            return
        try:
            d = m.details(ckpt)
        except Exception as err:
            self.details.object = _pre(f"{ckpt}: {_one_line(err)}")
            return
        info = d["info"]
        self.details.object = _pre(self._details_text(ckpt, info))
        self.restore_line.value = d["restore_line"]
        self.pin_btn.visible = ckpt not in m.pinned
        self.unpin_btn.visible = ckpt in m.pinned
        tables: list[Any] = [pn.pane.HTML("<b>Objects</b>"), _small_table(
            d["objects"], ["object", "kind", "type", "tensors", "dtypes", "bytes"])]
        if d["files"]:
            tables += [pn.pane.HTML("<b>Files</b>"), _small_table(d["files"], ["file", "bytes"])]
        self.objects.objects = tables
        self.metadata.object = _pre(json.dumps(
            {"checkpoint": info, "library_versions": d["library_versions"]}, indent=1,
            default=str), max_height=220)
        if not self.compare.value and info.get("parent"):
            self.compare.value = info["parent"]

    def _details_text(self, ckpt: str, info: dict[str, Any]) -> str:
        status = self.model.statuses.get(ckpt)
        metrics = ", ".join(f"{k}={_text(v)}" for k, v in (info.get("metrics") or {}).items())
        lines = [
            f"{ckpt}" + (f"  (named {info['name']})" if info.get("name") else ""),
            f"run {info.get('run') or '-'}  step {_text(info.get('step')) or '-'}  "
            f"epoch {_text(info.get('epoch')) or '-'}  created {info.get('created', '')}",
            f"status: {status.label if status else '-'}"
            + ("  (pinned)" if ckpt in self.model.pinned else ""),
            f"metrics: {metrics or '-'}",
            f"tags: {', '.join(info.get('tags') or ()) or '-'}",
            f"size {format_bytes(info.get('logical_bytes'))}, "
            f"new {format_bytes(info.get('new_bytes'))}; parent {info.get('parent') or '-'}",
            f"notebook: {info.get('notebook') or '-'}",
        ]
        if info.get("source"):
            lines.append(f"source: {info['source']}")
        return "\n".join(lines)

    # -- the storage summary (reads every manifest once: in the background) ---------------
    def refresh_summary(self, delay: float = 0.0) -> None:
        """Recompute the storage summary in a thread (``delay``: after the page updated)."""
        with self._summary_lock:
            if self._summary_state != "idle":
                self._summary_state = "dirty"
                return
            self._summary_state = "running"
        threading.Thread(target=self._summary_worker, args=(delay,), daemon=True,
                         name="ckpt-dashboard-summary").start()

    def _summary_worker(self, delay: float) -> None:
        time.sleep(delay)
        while True:
            try:
                s = self.model.summary()
                text = (f"{s.checkpoints} checkpoints: {format_bytes(s.logical_bytes)} logical, "
                        f"{format_bytes(s.stored_bytes)} stored (dedup {s.dedup_ratio:.2f}x)\n"
                        f"prunable now: {s.prunable_checkpoints} checkpoints, "
                        f"{format_bytes(s.prunable_bytes)} freed by pruning")
                if self.model.status_error:
                    text += f"\nretention policy: {_one_line(self.model.status_error)}"
            except Exception as err:
                text = f"storage summary unavailable: {_one_line(err)}"
            self.loop.call(setattr, self.summary, "object", _pre(text))
            with self._summary_lock:
                if self._summary_state == "dirty":
                    self._summary_state = "running"
                    continue
                self._summary_state = "idle"
                return

    # -- live updates ---------------------------------------------------------------------
    def on_store_change(self, kinds: Collection[str]) -> None:
        """Called by the store watcher (any thread): reload what changed."""
        changed = self.model.refresh() if "checkpoints" in kinds else False
        run = self._active_run() if self.loaded else None
        if "history" in kinds and not changed and run is not None:
            history = self.model.history(run)  # read here, not on the UI thread
            self.loop.call(self._show_plot, run, history)

    # -- actions --------------------------------------------------------------------------
    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as err:  # never a traceback in the page
            self.notify(Outcome(False, _one_line(err)))

    def notify(self, outcome: Outcome) -> None:
        """Show an outcome as a notification and in the status line (UI thread only)."""
        self.status_line.object = _pre(("" if outcome.ok else "error: ") + outcome.message)
        if self.notifications is not None:
            text = html.escape(outcome.message)
            if outcome.ok:
                self.notifications.success(text, duration=4000)
            else:
                self.notifications.error(text, duration=8000)

    def _background(self, work: Callable[[], Outcome], done: Callable[[Outcome], None] | None,
                    busy: Collection[pn.widgets.Button] = ()) -> None:
        for b in busy:
            b.disabled = True

        def run() -> None:
            outcome = work()

            def finish() -> None:
                for b in busy:
                    b.disabled = False
                self.notify(outcome)
                if done is not None:
                    done(outcome)
            self.loop.call(finish)
        threading.Thread(target=run, daemon=True, name="ckpt-dashboard-action").start()

    def _on_request_save(self) -> None:
        self.notify(self.model.request_save())

    def _on_prune_preview(self) -> None:
        self._background(self.model.prune_preview, None, [self.preview_btn])

    def _on_prune_ask(self) -> None:
        outcome = self.model.prune_preview()
        if not outcome.ok or outcome.message == "nothing to prune":
            self.notify(outcome)
            return
        self.prune_question.object = _pre(
            outcome.message.replace("would remove", "Remove") + "?")
        self.prune_confirm.visible = True

    def _on_prune(self) -> None:
        self.prune_confirm.visible = False
        self._background(self.model.prune, None, [self.prune_btn])

    def _on_pin(self) -> None:
        self.notify(self.model.pin(self.model.selected))

    def _on_unpin(self) -> None:
        self.notify(self.model.unpin(self.model.selected))

    def _on_verify(self) -> None:
        ckpt = self.model.selected
        self._background(lambda: self.model.verify(ckpt), None, [self.verify_btn])

    def _on_delete_ask(self) -> None:
        ckpt = self.model.selected
        guarded = self.model.needs_force(ckpt)
        why = " It is named or pinned: tick force to delete it anyway." if guarded else ""
        self.delete_question.object = _pre(f"Delete {ckpt}? Its manifest is removed now; "
                                           f"blobs only it uses are freed by prune or gc.{why}")
        self.delete_force.value = False
        self.delete_force.visible = guarded
        self.delete_confirm.visible = True

    def _on_delete(self) -> None:
        force = bool(self.delete_force.value)
        self.delete_force.value = False
        outcome = self.model.delete(self.model.selected, force=force)
        if outcome.ok:
            self.delete_confirm.visible = False
        self.notify(outcome)

    def _on_copy(self) -> None:
        ckpt = self.model.selected
        name, dest = self.copy_name.value or "", self.copy_dest.value or ""
        if not name.strip():
            self.notify(Outcome(False, "enter a name for the named checkpoint"))
            return
        self.copy_progress.value, self.copy_progress.visible = -1, True
        self.copy_rate.object = _pre("")
        start, last = time.monotonic(), [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] < _PROGRESS_INTERVAL_S and done < total:
                return
            last[0] = now
            value = int(1000 * done / total) if total else 1000
            rate = f"{format_bytes(done)} / {format_bytes(total)}  " \
                   f"{format_bytes(int(done / max(now - start, 1e-6)))}/s"
            self.loop.call(self._show_progress, value, rate)

        def done(outcome: Outcome) -> None:
            self.copy_progress.visible = False
            if outcome.ok:
                self.copy_name.value = ""
        self._background(lambda: self.model.copy(ckpt, name, dest, progress=progress), done,
                         [self.copy_btn])

    def _show_progress(self, value: int, rate: str) -> None:
        self.copy_progress.value = value
        self.copy_rate.object = _pre(rate)

    def _on_diff(self) -> None:
        other = (self.compare.value or "").strip()
        if not other:
            self.notify(Outcome(False, "enter a checkpoint to compare with"))
            return
        d = self.model.diff(other, self.model.selected)
        self.diff_text.object = _pre(f"from {d['from']} to {d['to']}: {len(d['changes'])} "
                                     f"tensors differ, {d['same']} unchanged")
        self.diff_table.objects = [_small_table(
            d["changes"], ["object", "tensor", "change", "detail"])] if d["changes"] else []

    def _on_selection(self, event: Any) -> None:
        selected = self.table.selected_dataframe
        ckpt = str(selected["id"].iloc[0]) if len(selected) else ""
        if ckpt and ckpt != self.model.selected:
            self.compare.value = ""
            self.model.selected = ckpt


def _one_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
