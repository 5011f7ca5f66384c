"""The Checkpointer: the API over one store (the pipelines are ``saving.py`` and
``restoring.py``).

    import ckpt_notebook as ckn
    ckpt = ckn.Checkpointer("checkpoints", model=model, optimizer=opt, scheduler=sched)
    info = ckpt.save(step=100, metrics={"val_loss": 0.31})   # snapshot now, write in background
    report = ckpt.restore("latest")                          # all-or-nothing, verified

Saving snapshots every tracked object to host memory on the caller's thread (so later
in-place updates never leak in), then hashes, writes and commits on one background thread.
At most one save is in flight; a background failure is logged (the ``ckpt_notebook`` logger)
when it happens and raised by the next call.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .. import capture, retention
from ..errors import BackgroundSaveError, InvalidArgumentError
from ..storage import Store, StoreProblem, VerifyProblem
from ..types import CheckpointInfo, Progress, RestoreReport, utc_now, validate_name
from .committing import name_taken
from .environment import clean_metrics, default_run_name, notebook_path
from .maintenance import (
    PruneReport,
    delete,
    load_policy,
    pin,
    prune,
    save_policy,
    statuses,
    unpin,
)
from .reading import export_weights
from .refs import is_run_keyword, names_weights_file, new_id, resolve_ref
from .restoring import restore_state, restore_weights_file
from .saving import Saver, retain
from .training import History, Schedule

__all__ = ["Checkpointer"]

REQUEST_POLL_S = 1.0  # how often step() looks for "save now" requests in the store

log = logging.getLogger(__name__)


class Checkpointer:
    """Save and restore the whole training state of the objects it tracks.

    Args:
        store: path or fsspec URL of the store (default ``$CKPT_NOTEBOOK_STORE`` or
            ``./checkpoints``), or an open :class:`~ckpt_notebook.storage.Store`.
        run: the run these checkpoints belong to (default: the notebook or script name).
        rng: also save and restore the python, numpy, torch and CUDA RNG states.
        allow_pickle: let values that only pickle can save be pickled (``True`` for all,
            or a collection of object names). Restoring them needs ``allow_pickle`` too.
        async_save: ``save()`` returns after the in-memory snapshot; writing is background.
        host_copy: keep a copy of the tracked tensors in host memory between saves. Async
            saves snapshot into it, and from a Checkpointer's second save on, every save
            compares tensors with it: one that did not change (a frozen layer) is neither
            hashed nor written again. ``False`` saves that memory; then every tensor is
            hashed on every save (unchanged ones are still not written).
        every: the schedule :meth:`step` saves on: a number of steps (``500``) or a duration
            (``"10min"``); ``None`` saves only when asked.
        find_objects: called before every save and change check; what it returns becomes
            the tracked objects (the notebook session finds them in the user namespace).
        **objects: what to track: modules, optimizers, schedulers, GradScaler, anything
            Stateful, random generators, and plain values.
    """

    def __init__(self, store: str | os.PathLike[str] | Store | None = None, *,
                 run: str | None = None, rng: bool = True,
                 allow_pickle: bool | Collection[str] = False, async_save: bool = True,
                 host_copy: bool = True, every: int | str | None = None,
                 storage_options: Mapping[str, Any] | None = None,
                 find_objects: Callable[[], dict[str, Any]] | None = None,
                 **objects: Any) -> None:
        self.store = store if isinstance(store, Store) else Store(store,
                                                                  **dict(storage_options or {}))
        self.run = run or default_run_name()
        self.rng = rng
        self.allow_pickle = allow_pickle
        self.async_save = async_save
        self.host_copy = host_copy
        self.objects: dict[str, Any] = {}
        self.last: CheckpointInfo | None = None
        self.progress: Progress | None = None
        self._pending: Future[CheckpointInfo] | None = None
        self._pending_id: str | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._saver = Saver()
        self._find_objects = find_objects
        self._lock = threading.Lock()
        self.schedule = Schedule.parse(every)
        self.history = History(self.store, self.run)
        self.last_prune: PruneReport | None = None
        self._fingerprints: dict[str, Any] = {}
        self._next_request_poll = 0.0
        self.track(**objects)
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"Checkpointer({self.store.url!r}, run={self.run!r}, objects={list(self.objects)})"

    def use_store(self, store: str | os.PathLike[str] | Store,
                  **storage_options: Any) -> None:
        """Switch this Checkpointer to another store (after the save in flight finishes)."""
        self.wait()
        with contextlib.suppress(Exception):
            self.history.flush(force=True)
        self.store = store if isinstance(store, Store) else Store(store, **storage_options)
        self.history = History(self.store, self.run)
        self.last = None
        self._fingerprints = {}
        self._saver.stamps = {}

    @property
    def pending(self) -> Future[CheckpointInfo] | None:
        """The background save in flight, if any (a Future of its committed info)."""
        return self._pending

    def track(self, **objects: Any) -> None:
        """Add (or replace) objects to save, by name."""
        for name, obj in objects.items():
            if name == capture.RNG_NAME:
                raise InvalidArgumentError(f"{name!r} is reserved for the RNG state",
                                           hint="use another name")
            self.objects[name] = obj

    # -- save ----------------------------------------------------------------------------
    def save(self, step: int | None = None, *, epoch: int | None = None,
             metrics: Mapping[str, Any] | None = None, tags: Sequence[str] = (),
             name: str | None = None, wait: bool | None = None) -> CheckpointInfo:
        """Snapshot every tracked object and write a checkpoint.

        Returns once the snapshot is in host memory (``committed=False``) unless
        ``wait=True`` or ``async_save=False``; :meth:`wait` returns the committed info.
        ``name`` makes a named, write-once checkpoint.
        """
        self.wait()
        if name is not None:
            validate_name(name)
            if self.store.exists(name):
                raise name_taken(name, self.store)
        # a manual, interrupt or after-cell save carries what step() recorded for its step
        cleaned = {**self.history.metrics_at(step), **clean_metrics(metrics)}
        sync = not self.async_save if wait is None else wait
        snaps = self._snapshot(copy=not sync)  # a synchronous save reads tensors in place
        self._fingerprints = self._fingerprint_all()
        self.history.flush(force=True)
        info = CheckpointInfo(
            id=name or new_id(), name=name, run=self.run,
            step=None if step is None else int(step), epoch=None if epoch is None else int(epoch),
            created=utc_now(), metrics=cleaned, tags=tuple(str(t) for t in tags),
            parent=self.last.id if self.last else None, kind="state",
            objects=tuple(s.name for s in snaps),
            logical_bytes=sum(s.nbytes for s in snaps), notebook=notebook_path(),
            committed=False,
        )
        if sync:
            return self._write(info, snaps)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="ckpt-save")
        with self._lock:
            self._pending = self._executor.submit(self._write_in_background, info, snaps)
            self._pending_id = info.id
        return info

    def _snapshot(self, *, copy: bool) -> list[capture.ObjectSnapshot]:
        self._refresh_objects()
        return self._saver.snapshot(self.objects, rng=self.rng, allow_pickle=self.allow_pickle,
                                    host_copy=self.host_copy, copy=copy)

    def _write(self, info: CheckpointInfo, snaps: list[capture.ObjectSnapshot]) -> CheckpointInfo:
        final, room = self._saver.write(self.store, info, snaps, last=self.last,
                                        progress=self._report_progress)
        self.last = final
        if room is not None:
            self.last_prune = room
        pruned = retain(self.store)  # retention runs only once the new checkpoint is committed
        if pruned is not None:
            self.last_prune = pruned
        return final

    def _write_in_background(self, info: CheckpointInfo,
                             snaps: list[capture.ObjectSnapshot]) -> CheckpointInfo:
        """:meth:`_write` on the save thread: a failure is logged now and raised by the next
        call (see :meth:`wait`)."""
        try:
            return self._write(info, snaps)
        except Exception as err:
            log.error("%s", _failed(info.id, err))
            raise

    def _report_progress(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def _refresh_objects(self) -> None:
        if self._find_objects is not None:
            self.objects = self._find_objects()

    # -- the training loop ---------------------------------------------------------------
    def step(self, step: int, metrics: Mapping[str, Any] | None = None, *,
             epoch: int | None = None) -> CheckpointInfo | None:
        """Call once per training step. Records the metrics (cheap: no tensor work) and saves
        when the schedule is due or a save was requested from outside (``ckpt request-save``,
        the dashboard). Returns the save's info, or ``None``."""
        self._raise_if_failed()
        cleaned = clean_metrics(metrics)
        self.history.record(step, cleaned, epoch)
        now = time.monotonic()
        requests = self._poll_requests(now)
        info = None
        if requests or self.schedule.due(step, now):
            tags = [t for r in requests for t in r.get("tags", ()) if isinstance(t, str)]
            info = self.save(step=step, epoch=epoch, metrics=self.history.latest,
                             tags=(("requested", *dict.fromkeys(tags)) if requests else ()))
            self.schedule.mark(step, now)
        self.history.flush()
        return info

    def _poll_requests(self, now: float) -> list[dict[str, Any]]:
        if now < self._next_request_poll:
            return []
        self._next_request_poll = now + REQUEST_POLL_S
        return self.store.requests.take("save")

    def _raise_if_failed(self) -> None:
        pending = self._pending
        if pending is not None and pending.done() and pending.exception() is not None:
            self.wait()

    def _fingerprint_all(self) -> dict[str, tuple[int | None, Any]]:
        """Per object: its identity (``None`` for plain values) and a state fingerprint."""
        self._refresh_objects()
        return {n: (None if capture.classify(o) == "value" else id(o), capture.fingerprint(o))
                for n, o in self.objects.items()}

    def changed(self) -> bool:
        """Whether tracked state changed since the last save (cheap; reads no tensor data)."""
        return self._fingerprint_all() != self._fingerprints

    # -- retention -----------------------------------------------------------------------
    @property
    def policy(self) -> retention.Policy:
        """The store's retention policy (shared with the CLI and the dashboard)."""
        return load_policy(self.store)

    def set_policy(self, policy: retention.Policy | None = None, **rules: Any) -> retention.Policy:
        """Set the store's retention policy: ``set_policy(keep_last=3, keep_best=2,
        monitor="val_loss")``; ``set_policy()`` keeps everything."""
        policy = policy if policy is not None else retention.Policy(**rules)
        save_policy(self.store, policy)
        return policy

    def statuses(self) -> dict[str, retention.Status]:
        """Each checkpoint's retention status and reason."""
        self.wait()
        return statuses(self.store)

    def prune(self, *, dry_run: bool = False) -> PruneReport:
        """Delete what the policy does not keep (never named, pinned or the newest)."""
        self.wait()
        return prune(self.store, dry_run=dry_run)

    def pin(self, ref: str) -> CheckpointInfo:
        return pin(self.store, self._own(ref))

    def unpin(self, ref: str) -> CheckpointInfo:
        return unpin(self.store, self._own(ref))

    def delete(self, ref: str, *, force: bool = False) -> CheckpointInfo:
        return delete(self.store, self._own(ref), force=force)

    def _own(self, ref: str) -> str:
        """``latest`` / ``best.<metric>`` -> this run's id; any other REF as it is."""
        return self.resolve(ref).id if is_run_keyword(ref) else ref

    def wait(self) -> CheckpointInfo | None:
        """Wait for the save in flight; raise its error if it failed. Returns its info."""
        with self._lock:
            pending, pending_id = self._pending, self._pending_id
            self._pending = self._pending_id = None
        if pending is None:
            return None
        try:
            return pending.result()
        except Exception as err:
            raise BackgroundSaveError(_failed(pending_id, err)) from err

    def close(self) -> None:
        """Finish the save in flight, write the metric history, stop the background thread."""
        try:
            self.wait()
            with contextlib.suppress(Exception):
                self.history.flush(force=True)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self._saver.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- listing and refs ----------------------------------------------------------------
    def resolve(self, ref: str = "latest") -> CheckpointInfo:
        """A REF (``latest``, ``best.<metric>[:min|max]``, an id, a name or a unique id
        prefix) -> the checkpoint it names."""
        self.wait()
        return resolve_ref(self.store, ref, run=self.run)

    # -- restore -------------------------------------------------------------------------
    def restore(self, ref: str = "latest", *, weights_only: bool = False, strict: bool = True,
                allow_pickle: bool = False,
                key_map: Mapping[str, str] | None = None) -> RestoreReport:
        """Load a checkpoint into the tracked objects: all of them or none.

        ``weights_only`` loads modules only (optimizer and the rest start fresh). ``ref`` may
        also be a path or URL of a plain ``.safetensors`` / ``.pt`` state dict. Keys saved
        from a wrapped model (``module.``, ``_orig_mod.``) map onto the tracked one and the
        reverse; ``key_map`` renames saved keys of every module first: ``{"backbone.":
        "encoder."}`` each key starting with ``backbone.``, a full key exactly.
        """
        self.wait()
        if names_weights_file(self.store, ref):
            return restore_weights_file(self.store, ref, self.objects, strict=strict,
                                        key_map=key_map)
        info = resolve_ref(self.store, ref, run=self.run)
        report = restore_state(self.store, info, self.objects, rng=self.rng,
                               weights_only=weights_only, strict=strict,
                               allow_pickle=allow_pickle, key_map=key_map)
        self.last = info
        return report

    # -- maintenance ---------------------------------------------------------------------
    def verify(self, ref: str | None = None) -> list[VerifyProblem | StoreProblem]:
        """Check one checkpoint's manifest and re-hash its blobs; with ``ref=None``, every
        checkpoint and the store's own files too (see ``Store.verify_all``)."""
        self.wait()
        if not ref:
            return self.store.verify_all()
        return [*self.store.verify(resolve_ref(self.store, ref, run=self.run).id)]

    def gc(self) -> Any:
        """Remove unreferenced blobs and leftover temp files."""
        self.wait()
        return self.store.gc()

    def export(self, ref: str, out: str | os.PathLike[str]) -> list[str]:
        """Write the model weights of a checkpoint as ``.safetensors`` or ``.pt`` that plain
        torch loads. Several modules are prefixed ``<name>.``; returns the keys written."""
        return export_weights(self.store, resolve_ref(self.store, ref, run=self.run), out)

    def list(self) -> list[CheckpointInfo]:
        """Every checkpoint in the store, oldest first."""
        self.wait()
        return self.store.list()


def _failed(ckpt_id: str | None, err: BaseException) -> str:
    return f"background save of {ckpt_id} failed: {type(err).__name__}: {err}"


_LIVE: weakref.WeakSet[Checkpointer] = weakref.WeakSet()


@atexit.register
def _finish_pending_saves() -> None:
    for ckpt in list(_LIVE):
        try:
            ckpt.close()
        except BackgroundSaveError:
            pass  # the save thread logged it when it failed
        except Exception as err:
            log.error("%s", err)
