"""``%checkpoint widget``: an ipywidgets panel over the notebook's session.

The checkpoint table with retention statuses, a chooser (newest first) for the checkpoint
that Restore / Verify / Pin act on, Save, a progress bar and a one-line message area.

A kernel busy in a training cell runs no click handler until the cell ends. So the buttons
are toggle buttons: the browser shows one pressed the moment it is clicked (its state is the
widget's own, no kernel needed), and the kernel lets it up once it has run the action; a line
under the buttons says so, and that ``ckpt request-save`` (or the JupyterLab panel's Request
save) reaches a running loop through the store.

Save snapshots on the kernel's thread and writes in the background; the progress bar follows
the write from the save thread by setting ``value`` traits only (at most ~10 updates a second),
which needs ipykernel >= 7.1 to reach the browser while the kernel is idle. Errors show as one
line in the message area, never as a traceback. Importing this module imports ipywidgets.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as widgets

from ..manager import maintenance
from ..types import CheckpointInfo, format_bytes
from .progress import Throttle
from .render import checkpoint_table
from .session import NotebookCheckpointer, existing_session, session

__all__ = ["CheckpointWidget", "widget"]

BUSY_HINT = ("<small>A pressed button stays down until the kernel runs it: a kernel busy in "
             "a cell runs clicks when the cell ends. To save during training: "
             "<code>ckpt request-save</code> in a terminal, or <i>Request save</i> in the "
             "JupyterLab Checkpoints panel.</small>")


class CheckpointWidget:
    """The panel; ``.view`` is the ipywidgets VBox, the methods are what its buttons call."""

    def __init__(self, checkpointer: NotebookCheckpointer) -> None:
        self._session = checkpointer
        # Follow `%checkpoint store URL` (which replaces the shell's session) when built on it.
        self._follow = existing_session(checkpointer.shell) is checkpointer
        self._saving: threading.Thread | None = None
        self._throttle = Throttle()
        self.table = widgets.HTML()
        self.choice = widgets.Dropdown(description="checkpoint", options=[])
        self.message = widgets.HTML()
        self.bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0)
        self.progress_label = widgets.Label()
        self.buttons = {name: widgets.ToggleButton(description=name, tooltip=tip)
                        for name, tip in (
            ("Save", "save the notebook's training state"),
            ("Restore", "load the chosen checkpoint into the notebook's objects"),
            ("Verify", "re-hash the blobs of the chosen checkpoint"),
            ("Pin", "pin or unpin the chosen checkpoint (retention keeps pinned ones)"),
            ("Refresh", "reload the checkpoint list"))}
        for name, action in (("Save", self.save), ("Restore", self.restore),
                             ("Verify", self.verify), ("Pin", self.toggle_pin),
                             ("Refresh", self.refresh)):
            self.buttons[name].observe(_pressed(self.buttons[name], action), names="value")
        self.hint = widgets.HTML(BUSY_HINT)
        self.choice.observe(lambda _change: self._update_pin_button(), names="value")
        self.view = widgets.VBox([
            widgets.HBox([self.choice, *self.buttons.values()]),
            widgets.HBox([self.bar, self.progress_label]),
            self.message,
            self.hint,
            self.table,
        ])
        self.refresh()

    @property
    def session(self) -> NotebookCheckpointer:
        current = existing_session(self._session.shell) if self._follow else None
        return current if current is not None else self._session

    @property
    def selected(self) -> str | None:
        """The id of the checkpoint Restore / Verify / Pin act on."""
        value = self.choice.value
        return str(value) if value else None

    # -- button actions ------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the table and the chooser from the store (does not wait for a save)."""
        try:
            store = self.session.store
            infos = store.list()
            status = maintenance.statuses(store, infos)
            self.table.value = checkpoint_table(
                infos, status, title=f"{len(infos)} checkpoint(s) in {store.url}")._repr_html_()
            keep = self.choice.value
            self.choice.options = [(_option(i), i.id) for i in reversed(infos)]
            ids = [i.id for i in infos]
            self.choice.value = keep if keep in ids else (ids[-1] if ids else None)
            self._update_pin_button()
        except Exception as err:
            self._error("refresh", err)

    def save(self) -> None:
        """Snapshot now; the write runs in the background and the bar follows it."""
        self.wait()
        s = self.session
        try:
            if not s.discover():
                raise ValueError("nothing to save: no torch Module, Optimizer, scheduler or "
                                 "GradScaler is bound in the notebook")
            self._start_progress("saving")
            s.progress = self.show_progress
            info = s.save(wait=False)
        except Exception as err:
            s.progress = None
            self._error("save", err)
            return
        self._say(f"saving {info.id}…")
        self._saving = threading.Thread(target=self._finish_save, args=(s, info),
                                        name="ckpt-widget-save", daemon=True)
        self._saving.start()

    def wait(self) -> None:
        """Wait until the save started from this widget is committed and shown."""
        if self._saving is not None:
            self._saving.join()
            self._saving = None

    def restore(self) -> None:
        """Load the chosen checkpoint into the objects bound to the same names now."""
        ref = self._require_selection("restore")
        if ref is None:
            return
        self._start_progress(f"restoring {ref}")
        try:
            report = self.session.restore_into_namespace(ref)
        except Exception as err:
            self._start_progress("")
            self._error("restore", err)
            return
        self.bar.value = 1.0
        self.progress_label.value = f"restored {ref}"
        names = [*report.restored, *report.values]
        rng = "; RNG restored" if report.rng_restored else ""
        self._say(f"restored {report.checkpoint.id}: {', '.join(names) or 'nothing'}{rng}")

    def verify(self) -> None:
        """Re-hash every blob of the chosen checkpoint."""
        ref = self._require_selection("verify")
        if ref is None:
            return
        try:
            problems = self.session.verify(ref)
        except Exception as err:
            self._error("verify", err)
            return
        if problems:
            self._say(f"verify {ref} failed: " + "; ".join(str(p) for p in problems), error=True)
        else:
            self._say(f"{ref}: OK, all blobs verify")

    def toggle_pin(self) -> None:
        """Pin the chosen checkpoint, or unpin it if it is pinned."""
        ref = self._require_selection("pin")
        if ref is None:
            return
        s = self.session
        try:
            pinned = ref in s.store.pins.ids()
            info = s.unpin(ref) if pinned else s.pin(ref)
        except Exception as err:
            self._error("pin", err)
            return
        self.refresh()
        self._say(f"{'unpinned' if pinned else 'pinned'} {info.id}")

    # -- progress (called from the save thread) ------------------------------------------
    def show_progress(self, done: int, total: int) -> None:
        """Set the bar and its label; throttled, except that the last update always shows."""
        if self._throttle.due(done, total) is None:
            return
        self.bar.value = min(1.0, done / total) if total > 0 else 1.0
        self.progress_label.value = f"saving: {format_bytes(done)} / {format_bytes(total)}"

    # -- helpers -------------------------------------------------------------------------
    def _finish_save(self, s: NotebookCheckpointer, info: CheckpointInfo) -> None:
        try:
            final = s.wait()
        except Exception as err:
            self.progress_label.value = "save failed"
            self._error("save", err)
            return
        finally:
            s.progress = None
        if final is None and not s.store.exists(info.id):  # another call collected the save
            self._say(f"the save of {info.id} was finished by another call; see its output")
            return
        self.bar.value = 1.0
        if final is not None and final.id != info.id:  # the same state was saved already
            self.progress_label.value = "nothing new"
            self._say(f"nothing new: the state at step {final.step} is exactly {final.id}'s; "
                      "no checkpoint added")
            return
        self.progress_label.value = f"saved {info.id}"
        self.refresh()
        new = f", {format_bytes(final.new_bytes)} new" if final is not None else ""
        self._say(f"saved {info.id} ({format_bytes(info.logical_bytes)}{new})")

    def _start_progress(self, label: str) -> None:
        self._throttle.reset()
        self.bar.value = 0.0
        self.progress_label.value = label

    def _require_selection(self, action: str) -> str | None:
        ref = self.selected
        if ref is None:
            self._say(f"{action}: no checkpoint chosen (save one first)", error=True)
        return ref

    def _update_pin_button(self) -> None:
        ref = self.selected
        try:
            pinned = ref is not None and ref in self.session.store.pins.ids()
        except Exception:
            pinned = False
        self.buttons["Pin"].description = "Unpin" if pinned else "Pin"

    def _error(self, action: str, err: BaseException) -> None:
        self._say(f"{action} failed: {type(err).__name__}: {err}", error=True)

    def _say(self, text: str, *, error: bool = False) -> None:
        line = html.escape(" ".join(text.split()))
        self.message.value = (f"<span style='color:#b00020'>{line}</span>" if error
                              else f"<span>{line}</span>")


def _pressed(button: Any, action: Any) -> Any:
    """A toggle button's observer: run ``action`` when pressed, then let the button up."""
    def run(change: dict[str, Any]) -> None:
        if change["new"]:
            try:
                action()
            finally:
                button.value = False
    return run


def _option(info: CheckpointInfo) -> str:
    parts = [info.id]
    if info.step is not None:
        parts.append(f"step {info.step}")
    return "  ".join(parts)


def widget() -> Any:
    """The checkpoint panel of this notebook (what ``%checkpoint widget`` shows)."""
    return CheckpointWidget(session()).view
