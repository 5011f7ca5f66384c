"""The save pipeline behind :meth:`Checkpointer.save`: snapshot -> write -> commit -> retain.

The snapshot runs on the caller's thread; :meth:`Saver.write` (hash, write the blobs, commit
the manifest) runs on the Checkpointer's background thread. Between saves the :class:`Saver`
remembers what lets the next one skip work: each tensor's stamp, and which blob each host
copy's bytes were stored as (see ``hostcopies.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .. import capture
from ..errors import CheckpointExistsError, CkptError
from ..storage import Store
from ..storage.blobs import Known, TensorRef
from ..storage.manifest import Manifest, PickleRecord, SavedObject, TensorRecord
from ..types import CheckpointInfo, Progress, TensorData
from .committing import commit_making_room, name_taken
from .environment import library_versions
from .hostcopies import HostCopies, buffer_key, make_pool
from .maintenance import PruneReport, load_policy, prune

__all__ = ["Saver", "manifest_objects", "retain", "same_as_last"]


class Saver:
    """Snapshots and writes the checkpoints of one Checkpointer."""

    def __init__(self) -> None:
        self.pool: Any = None
        self.stamps: dict[tuple[str, str], tuple[int, int] | None] = {}
        # host-copy buffer -> the digest of the blob its current bytes were stored as
        self.buffer_digests: dict[tuple[Any, ...], str] = {}

    def snapshot(self, objects: Mapping[str, Any], *, rng: bool,
                 allow_pickle: bool | Collection[str], host_copy: bool,
                 copy: bool = True) -> list[capture.ObjectSnapshot]:
        """Every object's state in host memory (``copy=False``: tensors stay in place)."""
        if self.pool is None and host_copy:
            self.pool = make_pool()
        # A synchronous save reads tensors in place; from the second save on (a Checkpointer
        # that saves once needs no copy) they are paired with host copies to compare with.
        mirror = not copy and bool(self.stamps)
        snaps = []
        for obj_name, obj in objects.items():
            snaps.append(capture.snapshot(obj_name, obj, pool=self.pool, copy=copy,
                                          mirror=mirror,
                                          allow_pickle=pickle_ok(allow_pickle, obj_name)))
        if rng:
            snaps.append(capture.snapshot_rng(pool=self.pool, copy=copy))
        return snaps

    def write(self, store: Store, info: CheckpointInfo, snaps: list[capture.ObjectSnapshot], *,
              last: CheckpointInfo | None,
              progress: Progress) -> tuple[CheckpointInfo, PruneReport | None]:
        """Hash, write and commit; returns the committed info and, when a full disk made
        this save prune to make room, that prune."""
        store.ensure_writable()
        entries = [((s.name, t.path), t) for s in snaps for t in s.tensors]
        tensors = [t.data for _, t in entries]
        # tensors whose stamp moved since the last save probably changed: hash those first,
        # so their writes overlap the hashing of the rest
        first = [i for i, (key, t) in enumerate(entries)
                 if t.stamp is None or self.stamps.get(key) != t.stamp]
        # A host copy holds the bytes of a known blob: an async snapshot that found its
        # buffer already holding the tensor's bytes reuses that blob; a sync save compares
        # the tensor with its copy first, and refreshes every copy that did not match.
        copies = HostCopies()
        known: dict[int, Known] = {}
        for i, (key, t) in enumerate(entries):
            digest = self.buffer_digests.get(buffer_key(key, t))
            if t.reused and digest:
                known[i] = digest
            elif t.mirror is not None and digest:
                known[i] = copies.check(key, t.mirror, digest)
            elif t.mirror is not None:
                copies.refresh(key, t.mirror)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            progress(done[0], info.logical_bytes)

        def attempt(again: bool) -> tuple[CheckpointInfo, list[TensorRef]]:
            if again:  # after a full disk: hash every tensor (copies may have been refreshed)
                done[0] = 0
            return self._commit(store, info, snaps, tensors, first, {} if again else known,
                                tick, last)

        try:
            try:
                (final, refs), room = commit_making_room(store, info, attempt)
            finally:
                unsure = copies.finish()
        except BaseException:
            self.buffer_digests.clear()  # the buffers may hold bytes that were never stored
            raise
        self.stamps = {key: t.stamp for key, t in entries}
        if room is None:
            self._remember_buffers(entries, refs, unsure)
        else:  # a second try: which bytes each host copy holds is not known
            self.buffer_digests.clear()
        return final, room

    def _remember_buffers(self, entries: list[tuple[tuple[str, str], Any]],
                          refs: list[TensorRef], unsure: set[tuple[str, str]]) -> None:
        """Note which blob each host copy's bytes were stored as, for the next save."""
        for (key, t), ref in zip(entries, refs, strict=True):
            if t.reused is not None or t.mirror is not None:
                if ref.key == "t" and key not in unsure:
                    self.buffer_digests[buffer_key(key, t)] = ref.blob
                else:
                    self.buffer_digests.pop(buffer_key(key, t), None)

    @staticmethod
    def _commit(store: Store, info: CheckpointInfo, snaps: list[capture.ObjectSnapshot],
                tensors: list[TensorData], first: list[int], known: dict[int, Known],
                tick: Callable[[int], None],
                last: CheckpointInfo | None) -> tuple[CheckpointInfo, list[TensorRef]]:
        with store.lock():
            for s in snaps:
                s.wait()
            refs, puts = store.blobs.put_tensors(tensors, first=first, known=known,
                                                 progress=tick)
            pickle_puts = store.blobs.put_many([[p.data] for s in snaps for p in s.pickles],
                                               progress=tick)
            objects = manifest_objects(snaps, refs, [p.digest for p in pickle_puts])
            blobs = {r.digest: r.size for r in (*puts, *pickle_puts)}
            new_bytes = sum(r.size for r in {r.digest: r for r in (*puts, *pickle_puts)
                                             if r.new}.values())
            final = replace(info, new_bytes=new_bytes, committed=True)
            same = same_as_last(store, last, final, objects)
            if same is not None:  # nothing new: no duplicate row
                return same, refs
            try:
                store.commit(Manifest(final, blobs, objects, library_versions=library_versions()))
            except CheckpointExistsError as err:  # another save took the name meanwhile
                if info.name is None:
                    raise
                raise name_taken(info.name, store) from err
        return final, refs

    def close(self) -> None:
        if self.pool is not None:
            self.pool.clear()


def pickle_ok(allow_pickle: bool | Collection[str], name: str) -> bool:
    if isinstance(allow_pickle, bool):
        return allow_pickle
    return name in allow_pickle


def same_as_last(store: Store, last: CheckpointInfo | None, info: CheckpointInfo,
                 objects: Mapping[str, SavedObject]) -> CheckpointInfo | None:
    """The previous checkpoint when this save would repeat it exactly: unnamed, same run,
    step and metrics, and the same state (every blob digest and value)."""
    if (last is None or info.name is not None or info.step is None
            or (last.run, last.step) != (info.run, info.step)
            or dict(last.metrics) != dict(info.metrics)):
        return None
    try:
        before, now = (json.dumps({n: o.to_json() for n, o in objs.items()}, sort_keys=True)
                       for objs in (store.manifest(last.id).objects, objects))
        same = before == now
    except (CkptError, OSError, TypeError, ValueError, KeyError):
        return None
    return last if same else None


def retain(store: Store) -> PruneReport | None:
    """Apply the store's retention policy once a save is committed (None: no policy)."""
    policy = load_policy(store)
    if policy.is_empty:
        return None
    return prune(store, policy=policy)


def manifest_objects(snaps: Sequence[capture.ObjectSnapshot], refs: Sequence[TensorRef],
                     pickle_digests: Sequence[str]) -> dict[str, SavedObject]:
    objects: dict[str, SavedObject] = {}
    ref_iter = iter(refs)
    pickle_iter = iter(pickle_digests)
    for s in snaps:
        tensors = []
        for t in s.tensors:
            r = next(ref_iter)
            tensors.append(TensorRecord(t.path, t.data.dtype, tuple(t.data.shape), t.array,
                                        t.device, r.blob, r.key, r.blob_size, r.nbytes, r.digest))
        pickles = tuple(PickleRecord(p.path, next(pickle_iter), len(p.data)) for p in s.pickles)
        objects[s.name] = SavedObject(s.kind, s.type, s.tree, tuple(tensors), pickles)
    return objects
