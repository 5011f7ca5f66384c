"""The dashboard's state and actions: a param model over one store, testable without a
browser. Views (views.py) only render it and call its actions.

Every action returns an :class:`Outcome` (ok + one-line message) instead of raising, so the
page shows a notification, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import param

from ...errors import CkptError, ProtectedCheckpointError, StorePermissionError
from ...manager import maintenance, resolve_ref
from ...manager.copying import copy as copy_checkpoint
from ...retention import Status
from ...storage import Store
from ...storage.manifest import Manifest, info_to_json
from ...types import CheckpointInfo, Progress, format_bytes
from ..render import short_time
from .series import X_AXES, metric_plots

__all__ = ["DashboardModel", "Outcome", "private_destination", "store_mode"]

_created_text = functools.lru_cache(maxsize=1 << 16)(short_time)  # rows() of 2,000: 80 ms less


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def _outcome(action: Callable[[], str]) -> Outcome:
    try:
        return Outcome(True, action())
    except (CkptError, ValueError, OSError) as err:
        return Outcome(False, str(err).splitlines()[0] if str(err) else type(err).__name__)
    except Exception as err:  # the page must never show a traceback
        return Outcome(False, f"{type(err).__name__}: {err}".strip().splitlines()[0])


class DashboardModel(param.Parameterized):
    """Checkpoints of a store with their statuses, filters, plots data and actions."""

    store_url = param.String(default="", doc="the store this dashboard shows")
    run_filter = param.String(default="", doc="only this run ('' = all)")
    tag_filter = param.String(default="", doc="only checkpoints with this tag ('' = all)")
    selected = param.String(default="", doc="the checkpoint the details and actions are about")
    compare_to = param.String(default="", doc="a second checkpoint to diff against")
    version = param.Integer(default=0, doc="bumped on every refresh, for views to watch")
    # the metric plots
    plot_runs = param.List(default=[], item_type=str,
                           doc="runs drawn together on the plots ([]: the run filter's run, "
                               "else the newest run)")
    x_axis: param.Selector = param.Selector(default="step", objects=list(X_AXES),
                            doc="the plots' x axis: training step or wall-clock time")
    log_scale = param.Boolean(default=False, doc="log-scaled y axes")
    smoothing = param.Number(default=0.0, bounds=(0.0, 0.99),
                             doc="exponential moving average weight of the lines (0: raw)")

    def __init__(self, store: str | Store | None = None, **params: Any) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        super().__init__(store_url=self.store.url, **params)
        self.infos: list[CheckpointInfo] = []
        self.statuses: dict[str, Status] = {}
        self.pinned: set[str] = set()
        self.verified: dict[str, bool] = {}
        self.last_request = ""  # the id of the last save request this page made
        self.status_error = ""
        self._manifests: dict[str, Manifest] = {}
        self._lock = threading.RLock()
        self.refresh()

    # -- loading -------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Reload the listing; returns whether anything changed."""
        with self._lock:
            infos = self.store.list()
            pinned = self.store.pins.ids()
            try:
                statuses, self.status_error = maintenance.statuses(self.store, infos), ""
            except CkptError as err:
                statuses, self.status_error = {}, str(err)
            changed = ([i.id for i in infos] != [i.id for i in self.infos]
                       or pinned != self.pinned or statuses != self.statuses)
            self.infos, self.pinned, self.statuses = infos, pinned, statuses
            live = {i.id for i in infos}
            self._manifests = {k: v for k, v in self._manifests.items() if k in live}
            if self.selected and self.selected not in live:
                self.selected = ""
        if changed:
            self.version += 1
        return changed

    def manifest(self, ckpt_id: str) -> Manifest:
        """Manifests are immutable: each is read once."""
        with self._lock:
            if ckpt_id not in self._manifests:
                self._manifests[ckpt_id] = self.store.manifest(ckpt_id)
            return self._manifests[ckpt_id]

    # -- what the table shows -----------------------------------------------------------
    @property
    def runs(self) -> list[str]:
        return sorted({i.run for i in self.infos if i.run})

    @property
    def tags(self) -> list[str]:
        return sorted({t for i in self.infos for t in i.tags})

    @property
    def metric_names(self) -> list[str]:
        return sorted({k for i in self.infos for k in i.metrics})

    def visible(self) -> list[CheckpointInfo]:
        return [i for i in self.infos
                if (not self.run_filter or i.run == self.run_filter)
                and (not self.tag_filter or self.tag_filter in i.tags)]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per visible checkpoint, newest first, in the table's columns."""
        metrics = self.metric_names
        out = []
        for i in reversed(self.visible()):
            status = self.statuses.get(i.id)
            verified = self.verified.get(i.id)
            row: dict[str, Any] = {
                "id": i.id, "name": i.name or "", "run": i.run or "", "step": i.step,
                "created": _created_text(i.created), "kind": i.kind,
                "tags": ", ".join(i.tags),
                **{f"metric: {m}": i.metrics.get(m) for m in metrics},
                "size": format_bytes(i.logical_bytes), "new": format_bytes(i.new_bytes),
                "status": status.label if status else "",
                "pinned": i.id in self.pinned,
                "verified": "" if verified is None else "ok" if verified else "FAILED",
            }
            out.append(row)
        return out

    # -- plots, details, diff, summary ---------------------------------------------------
    def history(self, run: str) -> dict[str, Any]:
        """Metric series of a run over steps, and where its checkpoints were saved (with the
        metrics each is kept as best by, ``best_of``)."""
        rows = self.store.history.read(run)
        series: dict[str, tuple[list[int], list[float]]] = {}
        for r in rows:
            for key, value in (r.get("metrics") or {}).items():
                if value is not None and r.get("step") is not None:
                    xs, ys = series.setdefault(key, ([], []))
                    xs.append(r["step"])
                    ys.append(value)
        marks = []
        for i in self.infos:
            if i.run == run and i.step is not None:
                status = self.statuses.get(i.id)
                best_of = _best_of(status)
                marks.append({"id": i.id, "step": i.step, "metrics": dict(i.metrics),
                              "kept_best": bool(best_of), "best_of": best_of,
                              "status": status.label if status else ""})
        return {"series": series, "checkpoints": marks}

    @param.depends("run_filter", watch=True)
    def _plots_follow_the_filter(self) -> None:
        self.plot_runs = [self.run_filter] if self.run_filter else []

    def plotted_runs(self) -> list[str]:
        """The runs the plots show: those chosen, else the run filter's, else the newest."""
        runs = self.runs
        chosen = [r for r in self.plot_runs if r in runs]
        if chosen:
            return chosen
        if self.run_filter in runs:
            return [self.run_filter]
        newest = next((i.run for i in reversed(self.infos) if i.run), None)
        return [newest] if newest else []

    def plot_data(self, runs: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """One entry per metric of ``runs`` (default :meth:`plotted_runs`): a line per run
        and a marker per checkpoint, on this model's x axis, smoothing and log scale (see
        :func:`.series.metric_plots`)."""
        runs = self.plotted_runs() if runs is None else runs
        histories = {run: self.store.history.read(run) for run in runs}
        marks = []
        for i in self.infos:
            if i.run in histories and i.step is not None:
                status = self.statuses.get(i.id)
                marks.append({"id": i.id, "run": i.run, "step": i.step, "created": i.created,
                              "metrics": dict(i.metrics),
                              "status": status.label if status else "",
                              "best_of": _best_of(status)})
        return metric_plots(histories, marks, x_axis=self.x_axis, smoothing=self.smoothing,
                            log=self.log_scale)

    def select(self, ckpt_id: str) -> bool:
        """Select a listed checkpoint (a plot marker was clicked); ``False`` if it is gone."""
        if any(i.id == ckpt_id for i in self.infos):
            self.selected = ckpt_id
            return True
        return False

    def details(self, ckpt_id: str) -> dict[str, Any]:
        """What the details pane shows: ``checkpoint`` (its info; ``info``: the same as the
        manifest's JSON holds it), its objects' and files' rows, the library versions."""
        doc = self.manifest(ckpt_id)
        objects = [{"object": name, "kind": obj.kind, "type": obj.type,
                    "tensors": len(obj.tensors),
                    "dtypes": ", ".join(sorted({t.dtype for t in obj.tensors})),
                    "bytes": format_bytes(sum(t.nbytes for t in obj.tensors))}
                   for name, obj in doc.objects.items()]
        files = [{"file": rel, "bytes": format_bytes(e.size)}
                 for rel, e in (doc.files or {}).items()]
        return {"checkpoint": doc.checkpoint, "info": info_to_json(doc.checkpoint),
                "objects": objects, "files": files,
                "library_versions": dict(doc.library_versions),
                "restore_line": self.restore_line(doc.checkpoint)}

    def diff(self, a: str, b: str) -> dict[str, Any]:
        info_a, info_b, changes, same = maintenance.diff(self.store, a, b)
        return {"from": info_a.id, "to": info_b.id, "same": same,
                "changes": [{"object": c.object, "tensor": c.path, "change": c.change,
                             "detail": c.detail} for c in changes]}

    def summary(self) -> maintenance.StorageSummary:
        prunable = {k for k, s in self.statuses.items() if not s.kept}
        blob_maps = {i.id: self.manifest(i.id).blobs for i in self.infos}
        return maintenance.storage_summary(self.infos, blob_maps, prunable)

    @staticmethod
    def restore_line(info: CheckpointInfo) -> str:
        """The line that brings checkpoint ``info`` back in a notebook: a files checkpoint
        holds no training state, so its line is ``use``."""
        if info.kind == "files":
            return f"%checkpoint use {info.name or info.id}"
        return f"%checkpoint restore {info.id}"

    # -- actions -------------------------------------------------------------------------
    def _after(self, message: str) -> str:
        self.refresh()
        return message

    def copy(self, ckpt_id: str, name: str, to: str = "",
             progress: Progress | None = None) -> Outcome:
        """Copy to a named checkpoint here or in the store ``to``; a local ``to`` ends up no
        more open to other users than this store's folder (see :func:`private_destination`)."""
        def run() -> str:
            dest = Store(to.strip()) if to.strip() else None
            with private_destination(self.store, dest):
                info = copy_checkpoint(ckpt_id, name.strip(), to=dest, store=self.store,
                                       progress=progress)
            where = dest.url if dest is not None else self.store.url
            return self._after(f"copied {ckpt_id} to named checkpoint {info.id} in {where}")
        return _outcome(run)

    def pin(self, ckpt_id: str) -> Outcome:
        return _outcome(lambda: self._after(f"pinned {maintenance.pin(self.store, ckpt_id).id}"))

    def unpin(self, ckpt_id: str) -> Outcome:
        return _outcome(
            lambda: self._after(f"unpinned {maintenance.unpin(self.store, ckpt_id).id}"))

    def delete(self, ckpt_id: str, *, force: bool = False) -> Outcome:
        """Delete a checkpoint as ``ckpt delete`` does: a named or pinned one only with
        ``force`` (the page's "force" box)."""
        def run() -> str:
            info = resolve_ref(self.store, ckpt_id)
            if not force and info.named:
                raise ProtectedCheckpointError(
                    f"{info.id} is a named, immutable checkpoint", ref=info.id,
                    url=self.store.url, hint="tick \"force\" to delete it anyway (CLI: ckpt "
                                             "delete NAME --force)")
            if not force and info.id in self.store.pins.ids():
                raise ProtectedCheckpointError(
                    f"{info.id} is pinned", ref=info.id, url=self.store.url,
                    hint="unpin it first, or tick \"force\" to delete it anyway")
            maintenance.delete(self.store, info.id, force=force)
            return self._after(f"deleted {info.id}; its blobs are freed by prune or gc")
        return _outcome(run)

    def needs_force(self, ckpt_id: str) -> bool:
        """Whether deleting ``ckpt_id`` needs ``force`` (it is named or pinned)."""
        info = next((i for i in self.infos if i.id == ckpt_id), None)
        return info is not None and (info.named or info.id in self.pinned)

    def verify(self, ckpt_id: str) -> Outcome:
        def run() -> str:
            problems = self.store.verify(ckpt_id)
            self.verified[ckpt_id] = not problems
            self.version += 1
            if problems:
                raise CkptError("; ".join(str(p) for p in problems[:3]))
            return f"{ckpt_id}: every blob verifies"
        return _outcome(run)

    def prune_preview(self) -> Outcome:
        return _outcome(lambda: str(maintenance.prune(self.store, dry_run=True)))

    def prune(self) -> Outcome:
        return _outcome(lambda: self._after(str(maintenance.prune(self.store))))

    def request_save(self) -> Outcome:
        from ...storage.control import REQUEST_LIFETIME_S

        def ask() -> str:
            self.last_request = maintenance.request_save(self.store, by="dashboard")
            return ("save requested: the running training loop saves at its next step(); "
                    f"with no loop running it expires in {REQUEST_LIFETIME_S:g} s, unsaved")

        return _outcome(ask)

    def request_taken(self, *, poll_s: float = 1.0) -> Outcome:
        """Wait until a loop took the last save request, or it expired: say which."""
        from ...storage.control import REQUEST_LIFETIME_S

        deadline = time.monotonic() + REQUEST_LIFETIME_S + 10
        while self.last_request and time.monotonic() < deadline:
            try:
                state = maintenance.request_state(self.store, self.last_request)
            except (CkptError, OSError, ValueError) as err:
                return Outcome(False, f"cannot tell whether a loop took the request: {err}")
            if state == "taken":
                return Outcome(True, "a training loop took the save request: it saves at its "
                                     "next step()")
            if state == "expired":
                return Outcome(False, "no training loop took the save request; it expired "
                                      "unsaved (is a loop calling step() on this store?)")
            time.sleep(poll_s)
        return Outcome(False, "no training loop took the save request yet")


def _best_of(status: Status | None) -> list[str]:
    """The metrics a checkpoint is kept as best by (``best loss #1`` -> ``loss``)."""
    return [r[len("best "):].rsplit(" #", 1)[0]
            for r in (status.reasons if status else ()) if r.startswith("best ")]


# -- permissions of what a copy writes -------------------------------------------------------
_OPEN_BITS = 0o077  # what group and others may do


def store_mode(store: Store) -> int | None:
    """The permission bits of a local store's folder (``None``: remote, or not made yet)."""
    folder = store.backend.local_folder
    if folder is None:
        return None
    try:
        return stat.S_IMODE(os.stat(folder).st_mode)
    except OSError:
        return None


@contextlib.contextmanager
def private_destination(source: Store, dest: Store | None) -> Iterator[None]:
    """Copy into a local ``dest`` only as far as others may read ``source``: a new folder is
    made with the source folder's mode (umask applies) before anything is written into it,
    and what the copy wrote is then narrowed to it too; an existing folder that lets group or
    others read what the source does not is refused. Remote destinations are left as they
    are (their access is the bucket's)."""
    src = store_mode(source)
    root = None if dest is None else dest.backend.local_folder
    if src is None or root is None:
        yield
        return
    if os.path.isdir(root):
        have = stat.S_IMODE(os.stat(root).st_mode)
        wider = have & _OPEN_BITS & ~src
        if wider:
            raise StorePermissionError(
                f"{root} (mode {have:04o}) lets other users read what {source.url} (mode "
                f"{src:04o}) does not", path=root,
                hint=f"chmod {have & ~wider:04o} {root} or copy into a new folder")
        yield
        return
    os.makedirs(os.path.dirname(root) or ".", exist_ok=True)
    os.mkdir(root, src)
    try:
        yield
    finally:
        _narrow(root, src)


def _narrow(root: str, mode: int) -> None:
    """Take from everything under ``root`` the group/other bits ``mode`` does not grant."""
    strip = _OPEN_BITS & ~mode
    for folder, dirs, files in os.walk(root):
        for path in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & strip:
                    os.chmod(path, stat.S_IMODE(st.st_mode) & ~strip)
