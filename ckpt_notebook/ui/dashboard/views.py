"""The dashboard's Panel views: they render a :class:`DashboardModel` and call its actions.

Layout: header, filters and the checkpoint table, then the Metrics card (:mod:`.views_plots`)
beside the Selected-checkpoint card, then Storage beside Diff. Sections sit in wrapping flex
rows, so the page fits a notebook cell (~1000 px: one column, no sideways scrolling) and spreads
into two columns in a wide JupyterLab area or browser window; nothing is laid over anything
else, so every button stays clickable at any width.

Feedback: every action's outcome appears in a :class:`.widgets.Feedback` line right under the
buttons that started it (and as a notification where the page has them), replacing the last
one; selecting another checkpoint clears the stale ones, and a failed Diff clears the previous
result.

Everything users wrote reaches the page as text: table cells through Tabulator's string
formatter, the rest through :func:`.widgets.text_pane`; plots draw text on a canvas.

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

from ...types import CheckpointInfo, format_bytes
from ..progress import Throttle
from .model import DashboardModel, Outcome
from .views_plots import MetricsView
from .widgets import COLOR, Feedback, UiLoop, label, pre, small_table, text_pane, wrap_row

__all__ = ["DashboardView", "UiLoop", "text_pane"]

PAGE_SIZE = 15
ALL_RUNS, ALL_TAGS = "all runs", "all tags"
SUMMARY_DELAY_S = 0.5  # after a live update, let the table and plot reach the page first
_PLOT_MODEL_PARAMS = {"plot_runs", "x_axis", "log_scale", "smoothing", "run_filter"}
_COPY_JS = """
const label = btn.label
const show = (text) => { btn.label = text; setTimeout(() => { btn.label = label }, 2000) }
navigator.clipboard.writeText(line.value).then(
  () => show('Copied'), () => show('Select the line and copy it'))
"""


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


def _card(title: str, *objects: Any, flex: str) -> pn.Card:
    """A section that takes its share of a wrapping row (``flex``: grow, shrink, basis)."""
    return pn.Card(*objects, title=title, collapsible=False, sizing_mode="stretch_width",
                   min_width=0, styles={"flex": flex, "min-width": "0"}, margin=(5, 5))


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
        self._changes: set[str] = set()
        self._changes_lock = threading.Lock()
        self._shown = ""
        self._build_widgets()
        self.panel = self._layout()
        self._render_table()
        self._render_selected()
        for name in ("version", "run_filter", "tag_filter", "selected", *_PLOT_MODEL_PARAMS):
            model.param.watch(partial(self._from_model, name), name)
        if not defer:
            self.load_rest()

    def load_rest(self) -> None:
        """Add everything below the table (UI thread), and start the storage summary."""
        if self.loaded:
            return
        self.loaded = True
        self.metrics.render()
        self.lower.objects = self._lower_sections()
        self.refresh_summary()

    # -- building -------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        m = self.model
        self.run_select = pn.widgets.Select(**label("Run"), width=200)
        self.tag_select = pn.widgets.Select(**label("Tag"), width=200)
        self._set_filter_options()
        self.run_select.param.watch(lambda e: setattr(m, "run_filter", e.new), "value")
        self.tag_select.param.watch(lambda e: setattr(m, "tag_filter", e.new), "value")
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(), pagination="remote", page_size=PAGE_SIZE, selectable=1,
            disabled=True, show_index=False, hidden_columns=["name"], layout="fit_data_fill",
            sizing_mode="stretch_width", min_width=0, titles=self._titles(),
            widths={"status": 230, "tags": 220},
            formatters={"size": _bytes_formatter(), "new": _bytes_formatter(),
                        "step": NumberFormatter(format="0", nan_format="-", text_align="right"),
                        "pinned": {"type": "tickCross", "crossElement": False}})
        self.table.param.watch(self._on_selection, "selection")
        self.metrics = MetricsView(m, self.loop)
        # feedback lines, each under the buttons whose outcome it shows
        self.header_note = Feedback("request-save")
        self.storage_note = Feedback("storage")
        self.actions_note = Feedback("checkpoint")
        self.copy_note = Feedback("copy")
        self.diff_note = Feedback("diff")
        self.summary = text_pane("storage: computing...", sizing_mode="stretch_width")
        self.request_btn = self._button("Request save", self._on_request_save,
                                        self.header_note, "primary")
        self.preview_btn = self._button("Prune preview", self._on_prune_preview,
                                        self.storage_note)
        self.prune_btn = self._button("Prune now...", self._on_prune_ask, self.storage_note,
                                      "warning")
        self.prune_confirm, self.prune_question = self._confirm_row(
            "Prune now", self._on_prune, self.storage_note)
        self._build_selected_widgets()

    def _build_selected_widgets(self) -> None:
        self.details = text_pane("Select a checkpoint in the table or on a plot.",
                                 sizing_mode="stretch_width")
        self.objects = pn.Column(sizing_mode="stretch_width")  # tables made on selection
        self.metadata = text_pane("", sizing_mode="stretch_width")
        self.restore_line = pn.widgets.TextInput(**label("Restore line"), width=340)
        self.copy_line_btn = pn.widgets.Button(**label("Copy restore line"), width=160,
                                               align="end")
        self.copy_line_btn.js_on_click(args={"line": self.restore_line,
                                             "btn": self.copy_line_btn}, code=_COPY_JS)
        note = self.actions_note
        self.pin_btn = self._button("Pin", self._on_pin, note)
        self.unpin_btn = self._button("Unpin", self._on_unpin, note)
        self.verify_btn = self._button("Verify", self._on_verify, note)
        self.delete_btn = self._button("Delete...", self._on_delete_ask, note, "danger")
        # named and pinned checkpoints are deleted only with "force" ticked, as in the CLI
        self.delete_force = pn.widgets.Checkbox(**label("force (named or pinned)"),
                                                value=False, align="center")
        self.delete_confirm, self.delete_question = self._confirm_row(
            "Delete", self._on_delete, note, self.delete_force)
        self.copy_name = pn.widgets.TextInput(**label("Named checkpoint"),
                                              placeholder="e.g. baseline-v1", width=200)
        self.copy_dest = pn.widgets.TextInput(**label("Destination store (empty: this one)"),
                                              placeholder="/path or s3://bucket/prefix",
                                              width=260)
        self.copy_btn = self._button("Copy to name", self._on_copy, self.copy_note, "primary")
        self.copy_progress = pn.indicators.Progress(value=0, max=1000, width=240,
                                                    visible=False, align="center")
        self.copy_rate = text_pane("", align="center")
        self.compare = pn.widgets.TextInput(**label("Compare with (REF)"), width=300,
                                            placeholder="id, name, latest, best.loss")
        self.diff_btn = self._button("Diff", self._on_diff, self.diff_note)
        self.diff_table = pn.Column(sizing_mode="stretch_width")

    def _button(self, text: str, handler: Callable[[], None], note: Feedback,
                kind: str = "default") -> pn.widgets.Button:
        btn = pn.widgets.Button(**label(text), **{COLOR: kind}, align="end")
        btn.on_click(lambda _e: self._guard(handler, note))
        return btn

    def _confirm_row(self, text: str, handler: Callable[[], None], note: Feedback,
                     *extra: Any) -> tuple[pn.Column, pn.pane.HTML]:
        """The question on one line, then ``extra`` (a "force" box), yes and cancel."""
        question = text_pane("", sizing_mode="stretch_width")
        yes = self._button(f"Yes, {text.lower()}", handler, note, "danger")
        no = pn.widgets.Button(**label("Cancel"), align="end")
        box = pn.Column(question, wrap_row(*extra, yes, no), visible=False,
                        sizing_mode="stretch_width",
                        styles={"background": "#fff3f3", "border-radius": "4px"})
        no.on_click(lambda _e: setattr(box, "visible", False))
        return box, question

    def _layout(self) -> pn.Column:
        store = html.escape(self.model.store_url)
        header = wrap_row(
            pn.pane.HTML(f"<h2 style='margin:0'>ckpt_notebook checkpoints</h2>"
                         f"<code style='overflow-wrap:anywhere'>{store}</code>",
                         sizing_mode="stretch_width", min_width=0, styles={"flex": "1 1 300px"}),
            pn.Column(self.request_btn, self.header_note.pane, width=320),
            justify_content="space-between")
        self.lower = pn.Column(sizing_mode="stretch_width", min_width=0)
        return pn.Column(header, wrap_row(self.run_select, self.tag_select), self.table,
                         self.lower, sizing_mode="stretch_width", min_width=0,
                         styles={"padding": "0 8px", "box-sizing": "border-box",
                                 "max-width": "100%"},
                         css_classes=["ckpt-dashboard"])

    def _lower_sections(self) -> list[Any]:
        selected = _card(
            "Selected checkpoint",
            self.details,
            wrap_row(self.restore_line, self.copy_line_btn),
            wrap_row(self.pin_btn, self.unpin_btn, self.verify_btn, self.delete_btn),
            self.delete_confirm, self.actions_note.pane,
            wrap_row(self.copy_name, self.copy_dest, self.copy_btn),
            wrap_row(self.copy_progress, self.copy_rate), self.copy_note.pane,
            self.objects,
            pn.pane.HTML("<b>Metadata</b>"), self.metadata, flex="2 1 420px")
        metrics = _card("Metrics", self.metrics.panel, flex="3 1 560px")
        storage = _card("Storage", self.summary, wrap_row(self.preview_btn, self.prune_btn),
                        self.prune_confirm, self.storage_note.pane, flex="1 1 420px")
        diff = _card("Diff (which tensors changed)", wrap_row(self.compare, self.diff_btn),
                     self.diff_note.pane, self.diff_table, flex="1 1 420px")
        return [wrap_row(metrics, selected, align_items="flex-start"),
                wrap_row(storage, diff, align_items="flex-start")]

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
        if names & _PLOT_MODEL_PARAMS and self.loaded:
            self.metrics.render()
        if "selected" in names:
            self._select_row()
            self._render_selected()
            if self.loaded:
                self.metrics.highlight()

    def _render_version(self) -> None:
        self._set_filter_options()
        self._render_table()
        self._render_selected()
        if self.loaded:
            self.metrics.render()
            self.refresh_summary(delay=SUMMARY_DELAY_S)

    def _render_table(self) -> None:
        df = _frame(self.model)
        self.table.titles = self._titles()
        self.table.value = df
        self._select_row()

    def _select_row(self) -> None:
        """The table shows the selection, also when it was made on a plot."""
        ids = list(self.table.value["id"]) if "id" in self.table.value else []
        sel = [ids.index(self.model.selected)] if self.model.selected in ids else []
        if self.table.selection != sel:
            self.table.selection = sel

    def _render_selected(self) -> None:
        m = self.model
        ckpt = m.selected
        for w in (self.pin_btn, self.unpin_btn, self.verify_btn, self.delete_btn,
                  self.copy_btn, self.diff_btn, self.copy_line_btn):
            w.disabled = not ckpt
        self.delete_confirm.visible = False
        for note in (self.actions_note, self.copy_note, self.diff_note):
            if note.kind != "busy":  # what a running copy or verify says stays
                note.clear()
        self.diff_table.objects = []
        if ckpt != self._shown:  # another checkpoint: diff against its own parent
            self._shown = ckpt
            self.compare.value = ""
        if not ckpt:
            self.details.object = pre("Select a checkpoint in the table or on a plot.")
            self.restore_line.value = ""
            self.objects.objects = []
            self.metadata.object = pre("")
            return
        try:
            d = m.details(ckpt)
        except Exception as err:
            self.details.object = pre(f"{ckpt}: {_one_line(err)}")
            return
        info: CheckpointInfo = d["checkpoint"]
        self.details.object = pre(self._details_text(ckpt, info))
        self.restore_line.value = d["restore_line"]
        self.pin_btn.visible = ckpt not in m.pinned
        self.unpin_btn.visible = ckpt in m.pinned
        tables: list[Any] = [pn.pane.HTML("<b>Objects</b>"), small_table(
            d["objects"], ["object", "kind", "type", "tensors", "dtypes", "bytes"])]
        if d["files"]:
            tables += [pn.pane.HTML("<b>Files</b>"), small_table(d["files"], ["file", "bytes"])]
        self.objects.objects = tables
        self.metadata.object = pre(json.dumps(
            {"checkpoint": d["info"], "library_versions": d["library_versions"]}, indent=1,
            default=str), max_height=220)
        if not self.compare.value and info.parent:
            self.compare.value = info.parent

    def _details_text(self, ckpt: str, info: CheckpointInfo) -> str:
        status = self.model.statuses.get(ckpt)
        metrics = ", ".join(f"{k}={_text(v)}" for k, v in info.metrics.items())
        lines = [
            f"{ckpt}" + (f"  (named {info.name})" if info.name else ""),
            f"run {info.run or '-'}  step {_text(info.step) or '-'}  "
            f"epoch {_text(info.epoch) or '-'}  created {info.created}",
            f"status: {status.label if status else '-'}"
            + ("  (pinned)" if ckpt in self.model.pinned else ""),
            f"metrics: {metrics or '-'}",
            f"tags: {', '.join(info.tags) or '-'}",
            f"size {format_bytes(info.logical_bytes)}, "
            f"new {format_bytes(info.new_bytes)}; parent {info.parent or '-'}",
            f"notebook: {info.notebook or '-'}",
        ]
        if info.source:
            lines.append(f"source: {info.source}")
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
            self.loop.call(setattr, self.summary, "object", pre(text))
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
        if "history" in kinds and not changed and self.loaded:
            runs, data = self.metrics.data()  # read here, not on the UI thread
            self.loop.call(self.metrics.show, runs, data)

    # -- actions --------------------------------------------------------------------------
    def _guard(self, fn: Callable[[], None], note: Feedback) -> None:
        try:
            fn()
        except Exception as err:  # never a traceback in the page
            self.notify(Outcome(False, _one_line(err)), note)

    def notify(self, outcome: Outcome, note: Feedback | None = None) -> None:
        """Show an outcome next to the action (``note``) and as a notification (UI thread)."""
        if note is not None:
            note.show(outcome)
        if self.notifications is not None:
            text = html.escape(outcome.message)
            if outcome.ok:
                self.notifications.success(text, duration=4000)
            else:
                self.notifications.error(text, duration=8000)

    def _background(self, work: Callable[[], Outcome], note: Feedback, busy_text: str,
                    busy: Collection[pn.widgets.Button] = (),
                    done: Callable[[Outcome], None] | None = None) -> None:
        for b in busy:
            b.disabled = True
        note.busy(busy_text)

        def run() -> None:
            outcome = work()

            def finish() -> None:
                for b in busy:
                    b.disabled = False
                self.notify(outcome, note)
                if done is not None:
                    done(outcome)
            self.loop.call(finish)
        threading.Thread(target=run, daemon=True, name="ckpt-dashboard-action").start()

    def _on_request_save(self) -> None:
        outcome = self.model.request_save()
        self.notify(outcome, self.header_note)
        if outcome.ok:  # then say whether a loop took it, or it expired
            self._background(self.model.request_taken, self.header_note,
                             f"{outcome.message}: waiting for a training loop to take it...",
                             [self.request_btn])

    def _on_prune_preview(self) -> None:
        self.prune_confirm.visible = False
        self._background(self.model.prune_preview, self.storage_note, "looking...",
                         [self.preview_btn])

    def _on_prune_ask(self) -> None:
        self.storage_note.clear()
        outcome = self.model.prune_preview()
        if not outcome.ok or outcome.message == "nothing to prune":
            self.prune_confirm.visible = False
            self.notify(outcome, self.storage_note)
            return
        self.prune_question.object = pre(
            outcome.message.replace("would remove", "Remove") + "?")
        self.prune_confirm.visible = True

    def _on_prune(self) -> None:
        self.prune_confirm.visible = False
        self._background(self.model.prune, self.storage_note, "pruning...", [self.prune_btn])

    def _on_pin(self) -> None:
        self.notify(self.model.pin(self.model.selected), self.actions_note)

    def _on_unpin(self) -> None:
        self.notify(self.model.unpin(self.model.selected), self.actions_note)

    def _on_verify(self) -> None:
        ckpt = self.model.selected
        self._background(lambda: self.model.verify(ckpt), self.actions_note,
                         f"verifying {ckpt}...", [self.verify_btn])

    def _on_delete_ask(self) -> None:
        ckpt = self.model.selected
        self.actions_note.clear()
        guarded = self.model.needs_force(ckpt)
        why = " It is named or pinned: tick force to delete it anyway." if guarded else ""
        self.delete_question.object = pre(f"Delete {ckpt}? Its manifest is removed now; "
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
        self.notify(outcome, self.actions_note)

    def _on_copy(self) -> None:
        ckpt = self.model.selected
        name, dest = self.copy_name.value or "", self.copy_dest.value or ""
        if not name.strip():
            self.notify(Outcome(False, "enter a name for the named checkpoint"), self.copy_note)
            return
        self.copy_progress.value, self.copy_progress.visible = -1, True
        self.copy_rate.object = pre("")
        start, throttle = time.monotonic(), Throttle()

        def progress(done: int, total: int) -> None:
            now = throttle.due(done, total)
            if now is None:
                return
            value = int(1000 * done / total) if total else 1000
            rate = f"{format_bytes(done)} / {format_bytes(total)}  " \
                   f"{format_bytes(int(done / max(now - start, 1e-6)))}/s"
            self.loop.call(self._show_progress, value, rate)

        def done(outcome: Outcome) -> None:
            self.copy_progress.visible = False
            self.copy_rate.object = pre("")
            if outcome.ok:
                self.copy_name.value = ""
        self._background(lambda: self.model.copy(ckpt, name, dest, progress=progress),
                         self.copy_note, f"copying {ckpt} to {name.strip()}...",
                         [self.copy_btn], done)

    def _show_progress(self, value: int, rate: str) -> None:
        self.copy_progress.value = value
        self.copy_rate.object = pre(rate)

    def _on_diff(self) -> None:
        self.diff_table.objects = []  # a failed diff must not leave the last result on show
        self.diff_note.clear()
        other = (self.compare.value or "").strip()
        if not other:
            self.notify(Outcome(False, "enter a checkpoint to compare with"), self.diff_note)
            return
        try:
            d = self.model.diff(other, self.model.selected)
        except Exception as err:
            self.notify(Outcome(False, f"diff {other}: {_one_line(err)}"), self.diff_note)
            return
        self.diff_note.show(Outcome(True, f"from {d['from']} to {d['to']}: "
                                          f"{len(d['changes'])} tensors differ, "
                                          f"{d['same']} unchanged"))
        self.diff_table.objects = [small_table(
            d["changes"], ["object", "tensor", "change", "detail"])] if d["changes"] else []

    def _on_selection(self, event: Any) -> None:
        selected = self.table.selected_dataframe
        ckpt = str(selected["id"].iloc[0]) if len(selected) else ""
        if ckpt and ckpt != self.model.selected:
            self.model.selected = ckpt


def _one_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
