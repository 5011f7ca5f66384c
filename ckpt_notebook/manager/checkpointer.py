"""The Checkpointer: capture -> write -> commit, and restore, over one store.

    import ckpt_notebook as ckn
    ckpt = ckn.Checkpointer("checkpoints", model=model, optimizer=opt, scheduler=sched)
    info = ckpt.save(step=100, metrics={"val_loss": 0.31})   # snapshot now, write in background
    report = ckpt.restore("latest")                          # all-or-nothing, verified

Saving snapshots every tracked object to host memory on the caller's thread (so later
in-place updates never leak in), then hashes, writes and commits on one background thread.
At most one save is in flight; a background failure is raised by the next call.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from .. import capture, retention
from ..errors import BackgroundSaveError, CheckpointExistsError, CkptError, RestoreError
from ..storage import Store, StoreProblem, VerifyProblem
from ..storage.blobs import Known, TensorRef
from ..types import CheckpointInfo, ObjectReport, RestoreReport, TensorData, utc_now, validate_name
from .committing import commit_making_room, name_taken
from .environment import clean_metrics, default_run_name, library_versions, notebook_path
from .hostcopies import HostCopies, buffer_key, make_pool
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
from .reading import export_weights, read_states, refuse_pickles, split_for_modules
from .refs import is_run_keyword, names_weights_file, new_id, read_url_bytes, resolve_ref
from .restoring import DirectReads, direct_reads, refuse_files, refuse_no_match, verify_blobs
from .training import History, Schedule

__all__ = ["Checkpointer"]

REQUEST_POLL_S = 1.0  # how often step() looks for "save now" requests in the store

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


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
        **objects: what to track: modules, optimizers, schedulers, GradScaler, anything
            Stateful, random generators, and plain values.
    """

    def __init__(self, store: str | os.PathLike[str] | Store | None = None, *,
                 run: str | None = None, rng: bool = True,
                 allow_pickle: bool | Collection[str] = False, async_save: bool = True,
                 host_copy: bool = True, every: int | str | None = None,
                 storage_options: Mapping[str, Any] | None = None, **objects: Any) -> None:
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
        self._pool: Any = None
        self._lock = threading.Lock()
        self.schedule = Schedule.parse(every)
        self.history = History(self.store, self.run)
        self.last_prune: PruneReport | None = None
        self._fingerprints: dict[str, Any] = {}
        self._stamps: dict[tuple[str, str], tuple[int, int] | None] = {}
        # host-copy buffer -> the digest of the blob its current bytes were stored as
        self._buffer_digests: dict[tuple[Any, ...], str] = {}
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
        self._stamps = {}

    @property
    def pending(self) -> Future[CheckpointInfo] | None:
        """The background save in flight, if any (a Future of its committed info)."""
        return self._pending

    def track(self, **objects: Any) -> None:
        """Add (or replace) objects to save, by name."""
        for name, obj in objects.items():
            if name == capture.RNG_NAME:
                raise ValueError(f"{name!r} is reserved for the RNG state; use another name")
            self.objects[name] = obj

    def untrack(self, *names: str) -> None:
        for name in names:
            self.objects.pop(name, None)

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
        snaps = self._snapshot_all(copy=not sync)  # a synchronous save reads tensors in place
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
            self._pending = self._executor.submit(self._write, info, snaps)
            self._pending_id = info.id
        return info

    def _snapshot_all(self, *, copy: bool = True) -> list[capture.ObjectSnapshot]:
        if self._pool is None and self.host_copy:
            self._pool = make_pool()
        # A synchronous save reads tensors in place; from the second save on (a Checkpointer
        # that saves once needs no copy) they are paired with host copies to compare with.
        mirror = not copy and bool(self._stamps)
        snaps = []
        for obj_name, obj in self.objects.items():
            snaps.append(capture.snapshot(obj_name, obj, pool=self._pool, copy=copy,
                                          mirror=mirror, allow_pickle=self._pickle_ok(obj_name)))
        if self.rng:
            snaps.append(capture.snapshot_rng(pool=self._pool, copy=copy))
        return snaps

    def _pickle_ok(self, name: str) -> bool:
        if isinstance(self.allow_pickle, bool):
            return self.allow_pickle
        return name in self.allow_pickle

    def _write(self, info: CheckpointInfo, snaps: list[capture.ObjectSnapshot]) -> CheckpointInfo:
        store = self.store
        store.ensure_writable()
        entries = [((s.name, t.path), t) for s in snaps for t in s.tensors]
        tensors = [t.data for _, t in entries]
        # tensors whose stamp moved since the last save probably changed: hash those first,
        # so their writes overlap the hashing of the rest
        first = [i for i, (key, t) in enumerate(entries)
                 if t.stamp is None or self._stamps.get(key) != t.stamp]
        # A host copy holds the bytes of a known blob: an async snapshot that found its
        # buffer already holding the tensor's bytes reuses that blob; a sync save compares
        # the tensor with its copy first, and refreshes every copy that did not match.
        copies = HostCopies()
        known: dict[int, Known] = {}
        for i, (key, t) in enumerate(entries):
            digest = self._buffer_digests.get(buffer_key(key, t))
            if t.reused and digest:
                known[i] = digest
            elif t.mirror is not None and digest:
                known[i] = copies.check(key, t.mirror, digest)
            elif t.mirror is not None:
                copies.refresh(key, t.mirror)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if self.progress is not None:
                self.progress(done[0], info.logical_bytes)

        def attempt(again: bool) -> tuple[CheckpointInfo, list[TensorRef]]:
            if again:  # after a full disk: hash every tensor (copies may have been refreshed)
                done[0] = 0
            return self._commit(info, snaps, tensors, first, {} if again else known, tick)

        try:
            try:
                (final, refs), room = commit_making_room(store, info, attempt)
            finally:
                unsure = copies.finish()
        except BaseException:
            self._buffer_digests.clear()  # the buffers may hold bytes that were never stored
            raise
        self.last = final
        self._stamps = {key: t.stamp for key, t in entries}
        if room is None:
            self._remember_buffers(entries, refs, unsure)
        else:  # a second try: which bytes each host copy holds is not known
            self.last_prune = room
            self._buffer_digests.clear()
        policy = load_policy(store)
        if not policy.is_empty:  # retention runs only once the new checkpoint is committed
            self.last_prune = prune(store, policy=policy)
        return final

    def _remember_buffers(self, entries: list[tuple[tuple[str, str], Any]],
                          refs: list[TensorRef], unsure: set[tuple[str, str]]) -> None:
        """Note which blob each host copy's bytes were stored as, for the next save."""
        for (key, t), ref in zip(entries, refs, strict=True):
            if t.reused is not None or t.mirror is not None:
                if ref.key == "t" and key not in unsure:
                    self._buffer_digests[buffer_key(key, t)] = ref.blob
                else:
                    self._buffer_digests.pop(buffer_key(key, t), None)

    def _commit(self, info: CheckpointInfo, snaps: list[capture.ObjectSnapshot],
                tensors: list[TensorData], first: list[int], known: dict[int, Known],
                tick: Callable[[int], None]) -> tuple[CheckpointInfo, list[TensorRef]]:
        store = self.store
        with store.lock():
            for s in snaps:
                s.wait()
            refs, puts = store.blobs.put_tensors(tensors, first=first, known=known,
                                                 progress=tick)
            pickle_puts = store.blobs.put_many([[p.data] for s in snaps for p in s.pickles],
                                               progress=tick)
            objects = _manifest_objects(snaps, refs, [p.digest for p in pickle_puts])
            blobs = {r.digest: r.size for r in (*puts, *pickle_puts)}
            new_bytes = sum(r.size for r in {r.digest: r for r in (*puts, *pickle_puts)
                                             if r.new}.values())
            final = replace(info, new_bytes=new_bytes, committed=True)
            same = self._same_as_last(final, objects)
            if same is not None:  # nothing new: no duplicate row
                return same, refs
            try:
                store.commit(final, objects=objects, blobs=blobs,
                             library_versions=library_versions())
            except CheckpointExistsError as err:  # another save took the name meanwhile
                if info.name is None:
                    raise
                raise name_taken(info.name, store) from err
        return final, refs

    def _same_as_last(self, info: CheckpointInfo,
                      objects: dict[str, Any]) -> CheckpointInfo | None:
        """The previous checkpoint when this save would repeat it exactly: unnamed, same run,
        step and metrics, and the same state (every blob digest and value)."""
        last = self.last
        if (last is None or info.name is not None or info.step is None
                or (last.run, last.step) != (info.run, info.step)
                or dict(last.metrics) != dict(info.metrics)):
            return None
        try:
            saved = self.store.manifest(last.id)["objects"]
            same = json.dumps(saved, sort_keys=True) == json.dumps(objects, sort_keys=True)
        except (CkptError, OSError, TypeError, ValueError, KeyError):
            return None
        return last if same else None

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
            raise BackgroundSaveError(
                f"background save of {pending_id} failed: {type(err).__name__}: {err}"
            ) from err

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
            if self._pool is not None:
                self._pool.clear()

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
                allow_pickle: bool = False) -> RestoreReport:
        """Load a checkpoint into the tracked objects: all of them or none.

        ``weights_only`` loads modules only (optimizer and the rest start fresh). ``ref`` may
        also be a path or URL of a plain ``.safetensors`` / ``.pt`` state dict.
        """
        self.wait()
        if names_weights_file(self.store, ref):
            return self._restore_weights_file(ref, strict=strict)
        info = resolve_ref(self.store, ref, run=self.run)
        refuse_files(info)
        doc = self.store.manifest(info.id)
        saved: dict[str, Any] = doc["objects"]
        plan = self._restore_plan(saved, weights_only=weights_only)
        refuse_pickles(info.id, saved, plan, allow_pickle)
        direct = direct_reads(info.id, saved, plan, self.objects)
        states = read_states(self.store, info.id, saved, plan,
                             placeholders={n: set(d.paths) for n, d in direct.items()},
                             allow_pickle=allow_pickle)
        verify_blobs(self.store.blobs, [item for d in direct.values() for item in d.blobs])
        reports = self._check_all(saved, states, strict)
        self._load_all(saved, states, strict, direct)
        rng_note = ""
        rng_restored = capture.RNG_NAME in states
        if rng_restored:
            from ..capture.torch import restore_rng

            rng_note = restore_rng(states[capture.RNG_NAME])
        values = {n: states[n] for n in plan if saved[n]["kind"] == "value"}
        for n, v in values.items():
            if n in self.objects:
                self.objects[n] = v
        for n in self.objects:
            if n not in plan:
                reports.append(ObjectReport(n, "skipped" if n in saved else "not in checkpoint",
                                            capture.classify(self.objects[n])))
        self.last = info
        unused = [n for n in saved if n not in plan and n not in self.objects
                  and n != capture.RNG_NAME]
        return RestoreReport(info, reports, values, rng_restored, rng_note, unused)

    def _restore_plan(self, saved: Mapping[str, Any], *, weights_only: bool) -> list[str]:
        plan = []
        for name, obj in saved.items():
            kind = obj["kind"]
            if name == capture.RNG_NAME:
                if self.rng and not weights_only:
                    plan.append(name)
            elif weights_only:
                if kind == "module" and name in self.objects:
                    plan.append(name)
            elif name in self.objects or kind == "value":
                plan.append(name)
        if weights_only and not plan:
            raise RestoreError("nothing to restore: the checkpoint has no module named like a "
                               f"tracked one (tracked: {', '.join(self.objects) or 'none'})")
        return plan

    def _check_all(self, saved: Mapping[str, Any], states: Mapping[str, Any],
                   strict: bool) -> list[ObjectReport]:
        reports = []
        for name, state in states.items():
            if name == capture.RNG_NAME or saved[name]["kind"] == "value":
                continue
            obj = self.objects[name]
            kind = capture.classify(obj)
            missing, unexpected = capture.check_fits(name, kind, obj, state, strict=strict,
                                                     saved_kind=saved[name]["kind"])
            if kind == "module":
                refuse_no_match(name, obj, missing, unexpected, source="the checkpoint")
            reports.append(ObjectReport(name, "restored", kind, missing, unexpected))
        return reports

    def _load_all(self, saved: Mapping[str, Any], states: Mapping[str, Any],
                  strict: bool, direct: Mapping[str, DirectReads]) -> None:
        """Non-modules first (a failure rolls them back), then the pre-checked modules (large
        tensors read straight into them, the rest through ``load_state_dict``)."""
        names = [n for n in states if n != capture.RNG_NAME and saved[n]["kind"] != "value"]
        first = [n for n in names if saved[n]["kind"] != "module"]
        done: list[tuple[str, str, Any]] = []
        try:
            for name in first:
                obj = self.objects[name]
                kind = capture.classify(obj)
                backup = _backup_state(obj, kind)
                capture.load_into(name, kind, obj, states[name], strict=strict)
                done.append((name, kind, backup))
        except Exception:
            for name, kind, backup in reversed(done):
                with contextlib.suppress(Exception):
                    capture.load_into(name, kind, self.objects[name], backup, strict=False)
            raise
        for name in names:
            if name in first:
                continue
            state = states[name]
            if name in direct:
                direct[name].read(self.store)
                state = {k: v for k, v in state.items() if k not in direct[name].paths}
            capture.load_into(name, "module", self.objects[name], state,
                              strict=strict and name not in direct)

    def _restore_weights_file(self, ref: str, *, strict: bool) -> RestoreReport:
        from ..capture.torch import load_weights_file

        raw = read_url_bytes(ref, self.store)
        tensors = load_weights_file(raw, where=ref)
        modules = {n: o for n, o in self.objects.items() if capture.classify(o) == "module"}
        targets = split_for_modules(tensors, modules, where=ref)
        reports = []
        for name, state in targets.items():
            missing, unexpected = capture.check_fits(name, "module", modules[name], state,
                                                     strict=strict, saved_kind="module")
            refuse_no_match(name, modules[name], missing, unexpected, source=ref)
            reports.append(ObjectReport(name, "restored", "module", missing, unexpected))
        for name, state in targets.items():
            capture.load_into(name, "module", modules[name], state, strict=strict)
        info = CheckpointInfo(id=os.path.basename(ref), kind="state", objects=tuple(targets))
        return RestoreReport(info, reports, rng_note="weights file: no RNG state")

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


def _backup_state(obj: Any, kind: str) -> Any:
    if kind == "generator":
        from ..capture.stateful import generator_family

        family = generator_family(obj)
        return (obj.bit_generator.state if family == "numpy"
                else obj.getstate() if family == "python" else obj.get_state())
    return obj.state_dict()


def _manifest_objects(snaps: Sequence[capture.ObjectSnapshot], refs: Sequence[TensorRef],
                      pickle_digests: Sequence[str]) -> dict[str, Any]:
    objects: dict[str, Any] = {}
    ref_iter = iter(refs)
    pickle_iter = iter(pickle_digests)
    for s in snaps:
        tensors = []
        for t in s.tensors:
            r = next(ref_iter)
            tensors.append({"path": t.path, "dtype": t.data.dtype, "shape": list(t.data.shape),
                            "array": t.array, "device": t.device, "blob": r.blob, "key": r.key,
                            "blob_size": r.blob_size, "nbytes": r.nbytes, "digest": r.digest})
        objects[s.name] = {"kind": s.kind, "type": s.type, "state": s.tree, "tensors": tensors}
        pickles = [{"path": p.path, "blob": next(pickle_iter), "size": len(p.data)}
                   for p in s.pickles]
        if pickles:
            objects[s.name]["pickles"] = pickles
    return objects


_LIVE: weakref.WeakSet[Checkpointer] = weakref.WeakSet()


@atexit.register
def _finish_pending_saves() -> None:
    for ckpt in list(_LIVE):
        try:
            ckpt.close()
        except Exception as err:
            print(f"ckpt_notebook: {err}", file=sys.stderr)
