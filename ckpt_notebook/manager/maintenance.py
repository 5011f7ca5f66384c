"""Store-wide operations shared by the Checkpointer, the magics, the CLI and the dashboard:
retention statuses, prune, pin, delete and "save now" requests.

What a prune removes, and why, is logged (INFO, the ``ckpt_notebook`` logger): a prune also
runs unasked, after every save on a store with a retention policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import retention
from ..errors import CkptError, FormatError, IntegrityError, ProtectedCheckpointError
from ..storage import GcReport, Store
from ..storage.manifest import TensorRecord
from ..types import CheckpointInfo
from . import uses
from .refs import resolve_ref

__all__ = [
    "PruneReport",
    "StorageSummary",
    "TensorChange",
    "delete",
    "diff",
    "load_policy",
    "pin",
    "prune",
    "request_save",
    "request_state",
    "save_policy",
    "statuses",
    "storage_summary",
    "unpin",
]

log = logging.getLogger(__name__)


def load_policy(store: Store) -> retention.Policy:
    doc = store.policy.read()  # a policy file that does not read raises as it is
    try:
        return retention.Policy.from_json(doc)
    except (TypeError, ValueError) as err:
        raise CkptError(f"{store.url}/policy.json is not a valid retention policy ({err}); "
                        "set it again with `%checkpoint policy` or `ckpt policy`") from err


def save_policy(store: Store, policy: retention.Policy) -> None:
    store.policy.write(policy.to_json())


def statuses(store: Store, infos: list[CheckpointInfo] | None = None,
             policy: retention.Policy | None = None,
             now: datetime | float | None = None) -> dict[str, retention.Status]:
    """Every checkpoint's retention status under the store's policy."""
    infos = store.list() if infos is None else infos
    policy = load_policy(store) if policy is None else policy
    now = time.time() if now is None else now
    return retention.statuses(infos, policy, pinned=store.pins.ids(), now=now)


@dataclass
class PruneReport:
    """What a prune removed (or, with ``dry_run``, would remove)."""

    removed: list[CheckpointInfo] = field(default_factory=list)
    gc: GcReport | None = None
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        if not self.removed:
            return "nothing to prune"
        ids = ", ".join(i.id for i in self.removed[:8])
        more = f" (+{len(self.removed) - 8} more)" if len(self.removed) > 8 else ""
        freed = f"; {self.gc}" if self.gc is not None else ""
        return f"{verb} {len(self.removed)} checkpoint(s): {ids}{more}{freed}"


def prune(store: Store, *, dry_run: bool = False, policy: retention.Policy | None = None,
          pending: CheckpointInfo | None = None) -> PruneReport:
    """Delete the checkpoints the policy does not keep, then free their blobs (gc).

    Never removes named or pinned checkpoints or the newest one (retention guarantees it).
    ``pending``: a save that cannot commit for lack of space. The policy is applied as it
    will stand once that save lands (it counts as the newest), but the newest committed
    checkpoint is still never removed.
    """
    policy = load_policy(store) if policy is None else policy
    infos = store.list()
    ranked = infos if pending is None else [*infos, pending]
    doomed = retention.prunable(ranked, policy, pinned=store.pins.ids(), now=time.time())
    if pending is not None:
        newest = retention.latest(infos)
        doomed = [i for i in doomed if i.id not in (pending.id, newest and newest.id)]
    report = PruneReport(doomed, dry_run=dry_run)
    if dry_run or not doomed:
        return report
    why = f"the retention policy ({policy.describe()}) does not keep it"
    if pending is not None:
        why += f"; pruned before saving {pending.id}, to make room on a full store"
    for info in doomed:
        store.delete(info.id)
        step = f" (step {info.step})" if info.step is not None else ""
        log.info("pruned %s%s from %s: %s", info.id, step, store.url, why)
    report.gc = store.gc()
    log.info("prune of %s: %s", store.url, report.gc)
    return report


def pin(store: Store, ref: str) -> CheckpointInfo:
    info = resolve_ref(store, ref)
    store.pins.add(info.id)
    return info


def unpin(store: Store, ref: str) -> CheckpointInfo:
    info = resolve_ref(store, ref)
    store.pins.remove(info.id)
    return info


_FORCE = "force=True"  # what a refusal tells the caller to pass


def delete(store: Store, ref: str, *, force: bool = False) -> CheckpointInfo:
    """Delete one checkpoint (blobs are freed by the next gc). Named or pinned ones need
    ``force``: names are meant to stay. With ``force``, a checkpoint whose manifest is lost or
    unreadable is deleted too: that accepts the loss."""
    try:
        info = resolve_ref(store, ref)
    except (IntegrityError, FormatError):
        if not force or ref not in {u.id for u in store.unreadable()}:
            raise
        store.delete(ref)  # a checkpoint that cannot be read: deleting it accepts the loss
        return CheckpointInfo(id=ref)
    in_use = [] if force else uses.users(store, info.id)
    if in_use:
        more = f" and {len(in_use) - 1} more" if len(in_use) > 1 else ""
        raise ProtectedCheckpointError(
            f"{info.id} is in use: {in_use[0]}{more}", ref=ref, url=store.url,
            hint="delete it with force=True once that copy is no longer needed", keyword=_FORCE)
    if not force and info.named:
        raise ProtectedCheckpointError(f"{info.id} is a named (immutable) checkpoint", ref=ref,
                                       url=store.url, keyword=_FORCE,
                                       hint="delete it with force=True if you really mean to")
    if not force and info.id in store.pins.ids():
        raise ProtectedCheckpointError(f"{info.id} is pinned", ref=ref, url=store.url,
                                       hint="unpin it first or delete it with force=True",
                                       keyword=_FORCE)
    store.delete(info.id)
    uses.forget(store, info.id)
    return info


def request_save(store: Store, **fields: Any) -> str:
    """Ask a training loop running on this store to save at its next ``step()``."""
    return store.requests.put("save", **fields)


def request_state(store: Store, req_id: str) -> str:
    """Whether a loop took request ``req_id``: ``pending``, ``taken`` or ``expired``."""
    return store.requests.state(req_id)


@dataclass(frozen=True)
class TensorChange:
    """One tensor that differs between two checkpoints."""

    object: str
    path: str
    change: str  # "changed" | "added" | "removed" | "reshaped"
    detail: str = ""


def diff(store: Store, ref_a: str, ref_b: str) -> tuple[CheckpointInfo, CheckpointInfo,
                                                         list[TensorChange], int]:
    """Which tensors changed from ``ref_a`` to ``ref_b``, from manifest hashes alone (no
    tensor data is read). Returns both infos, the changes and the number unchanged."""
    a, b = resolve_ref(store, ref_a), resolve_ref(store, ref_b)
    ta, tb = _tensor_table(store, a.id), _tensor_table(store, b.id)
    changes: list[TensorChange] = []
    same = 0
    for key in sorted(ta.keys() | tb.keys()):
        obj, path = key
        if key not in tb:
            changes.append(TensorChange(obj, path, "removed"))
        elif key not in ta:
            changes.append(TensorChange(obj, path, "added", _shape_text(tb[key])))
        elif (ta[key].dtype, ta[key].shape) != (tb[key].dtype, tb[key].shape):
            changes.append(TensorChange(obj, path, "reshaped",
                                        f"{_shape_text(ta[key])} -> {_shape_text(tb[key])}"))
        elif _content_id(ta[key]) != _content_id(tb[key]):
            changes.append(TensorChange(obj, path, "changed", _shape_text(tb[key])))
        else:
            same += 1
    return a, b, changes, same


def _tensor_table(store: Store, ckpt_id: str) -> dict[tuple[str, str], TensorRecord]:
    objects = store.manifest(ckpt_id).objects
    return {(name, t.path): t for name, obj in objects.items() for t in obj.tensors}


def _content_id(entry: TensorRecord) -> tuple[str, str]:
    # Manifests before per-tensor digests: a blob of its own ("t") identifies the tensor;
    # a packed tensor is identified by its pack and key (conservative: may report "changed").
    return (("digest", entry.digest) if entry.digest is not None
            else ("blob", entry.blob + "/" + entry.key))


def _shape_text(entry: TensorRecord) -> str:
    return f"{entry.dtype}{list(entry.shape)}"


@dataclass(frozen=True)
class StorageSummary:
    """How much the checkpoints take: logical vs stored bytes, and what pruning would free."""

    checkpoints: int
    logical_bytes: int
    stored_bytes: int
    prunable_checkpoints: int
    prunable_bytes: int  # freed by pruning now: blobs only prunable checkpoints use

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.stored_bytes if self.stored_bytes else 1.0


def storage_summary(infos: list[CheckpointInfo], blob_maps: Mapping[str, Mapping[str, int]],
                    prunable_ids: set[str]) -> StorageSummary:
    """Summarize from each checkpoint's blob map (digest -> size, from its manifest)."""
    sizes: dict[str, int] = {}
    users: dict[str, int] = {}
    kept_users: dict[str, int] = {}
    for info in infos:
        for digest, size in blob_maps.get(info.id, {}).items():
            sizes[digest] = int(size)
            users[digest] = users.get(digest, 0) + 1
            if info.id not in prunable_ids:
                kept_users[digest] = kept_users.get(digest, 0) + 1
    freed = sum(size for d, size in sizes.items() if users[d] and not kept_users.get(d))
    return StorageSummary(
        checkpoints=len(infos), logical_bytes=sum(i.logical_bytes for i in infos),
        stored_bytes=sum(sizes.values()),
        prunable_checkpoints=sum(1 for i in infos if i.id in prunable_ids),
        prunable_bytes=freed)
