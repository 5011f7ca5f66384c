"""The notebook session behind ``%checkpoint``: a Checkpointer over the user namespace.

At every save it looks at the notebook's public names and tracks every torch Module,
Optimizer, LR scheduler and GradScaler it finds, plus ``step``/``epoch``/``global_step`` when
bound to ints, plus the names the user asked for (``%checkpoint save config``). Restoring
loads into the objects bound to the same names now (the user re-ran the cells that build
them) and re-binds plain values.

With auto-checkpointing on, a ``post_run_cell`` hook saves when tracked state changed, and
a cell stopped by KeyboardInterrupt gets a checkpoint before control returns.

The session shows the package's warnings and errors (the ``ckpt_notebook`` logger: a failed
background save, an auto-checkpoint that failed, a full store) in the notebook, on stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..capture import RNG_NAME, classify
from ..manager import Checkpointer, names_weights_file
from ..manager.restoring import refuse_files
from ..types import CheckpointInfo, RestoreReport

__all__ = ["NotebookCheckpointer", "get_session", "session"]

log = logging.getLogger(__name__)

AUTO_KINDS = frozenset({"module", "optimizer", "scheduler", "scaler"})
COUNTERS = ("step", "epoch", "global_step")
_HIDDEN = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


class NotebookLogHandler(logging.Handler):
    """Writes ``ckpt_notebook: <message>`` to the ``sys.stderr`` of the moment (IPython points
    it at the running cell's output); warnings and errors only."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("ckpt_notebook: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def show_logs_in_notebook() -> None:
    """Install the :class:`NotebookLogHandler` on the package logger (once)."""
    package = logging.getLogger("ckpt_notebook")
    if not any(isinstance(h, NotebookLogHandler) for h in package.handlers):
        package.addHandler(NotebookLogHandler())


@dataclass
class AutoSettings:
    enabled: bool = False
    on_interrupt: bool = False


class NotebookCheckpointer(Checkpointer):
    """A Checkpointer whose objects are the notebook's, discovered at each save."""

    def __init__(self, shell: Any, store: Any = None, **kwargs: Any) -> None:
        self.shell = shell
        self.extra: list[str] = []
        self.auto_settings = AutoSettings()
        show_logs_in_notebook()
        super().__init__(store, find_objects=self.discover, **kwargs)

    @property
    def namespace(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else vars(sys.modules["__main__"])

    def discover(self) -> dict[str, Any]:
        """The objects a save would include right now, by name."""
        found: dict[str, Any] = {}
        for name, obj in list(self.namespace.items()):
            if name.startswith("_") or name in _HIDDEN or isinstance(obj, type):
                continue
            if name in COUNTERS and type(obj) is int:
                found[name] = obj
                continue
            try:
                kind = classify(obj)
            except Exception:  # noqa: S112 - odd __getattr__ objects must not break a save
                continue
            if kind in AUTO_KINDS:
                found[name] = obj
        for name in self.extra:
            if name in self.namespace:
                found[name] = self.namespace[name]
        return found

    def remember(self, names: Iterable[str]) -> list[str]:
        """Track these names from now on (they must be bound); returns the newly added."""
        names = list(names)
        missing = [n for n in names if n not in self.namespace]
        if missing:
            raise NameError(f"name {missing[0]!r} is not defined in the notebook; run the cell "
                            "that defines it first")
        added = [n for n in dict.fromkeys(names) if n not in self.extra]
        self.extra.extend(added)
        return added

    def forget(self, names: Iterable[str]) -> None:
        self.extra = [n for n in self.extra if n not in set(names)]

    def start_auto(self) -> None:
        """Turn auto-checkpointing on; the current state is the baseline it compares to."""
        if not self.auto_settings.enabled:
            self._fingerprints = self._fingerprint_all()
        self.auto_settings.enabled = True

    def default_step(self) -> int | None:
        for name in ("global_step", "step"):
            value = self.namespace.get(name)
            if type(value) is int:
                return value
        return None

    def save(self, step: int | None = None, **kwargs: Any) -> CheckpointInfo:
        return super().save(self.default_step() if step is None else step, **kwargs)

    def restore_into_namespace(self, ref: str = "latest", **kwargs: Any) -> RestoreReport:
        """Restore into the objects bound to the saved names now; re-bind plain values."""
        ns = self.namespace
        if names_weights_file(self.store, ref):  # a plain state dict: into the notebook's modules
            self.objects = {n: o for n, o in self.discover().items() if classify(o) == "module"}
            return self.restore(ref, **kwargs)
        info = self.resolve(ref)
        refuse_files(info)
        saved = self.store.manifest(info.id).objects
        self.objects = {n: ns[n] for n in saved
                        if n != RNG_NAME and n in ns and saved[n].kind != "value"}
        report = self.restore(info.id, **kwargs)
        for name, value in report.values.items():
            ns[name] = value
        self._fingerprints = self._fingerprint_all()
        return report

    def _auto_save_if_trained(self) -> None:
        """Save when the tracked objects were changed in place (trained), not when the cell
        bound new ones: re-running setup cells after a restart must not make fresh, untrained
        objects the ``latest`` checkpoint. New objects only become the new baseline."""
        now = self._fingerprint_all()
        before = self._fingerprints
        identities = {n: ident for n, (ident, _) in now.items() if ident is not None}
        if not before or identities != {n: ident for n, (ident, _) in before.items()
                                        if ident is not None}:
            self._fingerprints = now
            return
        if now != before:
            self.save(tags=("auto",))

    # -- IPython hooks -------------------------------------------------------------------
    def post_run_cell(self, result: Any) -> None:
        """Save after an interrupted cell (``--on-interrupt``) or when state changed (auto)."""
        settings = self.auto_settings
        error = getattr(result, "error_in_exec", None)
        try:
            if isinstance(error, KeyboardInterrupt) and settings.on_interrupt:
                info = self.save(tags=("interrupted",), wait=True)
                print(f"checkpoint {info.id} saved after the interrupt "
                      f"(step {info.step})" if info.step is not None else
                      f"checkpoint {info.id} saved after the interrupt")
            elif settings.enabled and error is None:
                self._auto_save_if_trained()
        except Exception as err:  # a hook must never break the user's next cell
            log.error("auto-checkpoint failed: %s", err)


_SESSIONS: dict[int, NotebookCheckpointer] = {}


def existing_session(shell: Any) -> NotebookCheckpointer | None:
    return _SESSIONS.get(id(shell))


def get_session(shell: Any = None, *, store: Any = None) -> NotebookCheckpointer:
    """The session of ``shell`` (created on first use); ``store`` switches its store."""
    key = id(shell)
    current = _SESSIONS.get(key)
    if current is not None and store is not None and store != current.store.url:
        current.use_store(store)
    if current is None:
        current = NotebookCheckpointer(shell, store)
        _SESSIONS[key] = current
    return current


def session() -> NotebookCheckpointer:
    """The Checkpointer behind ``%checkpoint`` in this notebook; call ``.step(i, metrics)``
    on it inside a training loop to get scheduled saves and "save now" requests."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    return get_session(shell)
