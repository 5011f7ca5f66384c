"""Checkpoints as plain JSON entries (info + retention status + pin), newest first.

The JupyterLab REST API answers these (docs/rest-api.md, "Entry"); ``ckpt ls --json`` can
share them. Non-finite metrics (NaN, inf) become ``null``: JSON has no such numbers and
browsers refuse a document that holds them.
"""

from __future__ import annotations

import math
from typing import Any

from .. import retention
from ..errors import CkptError
from ..storage import Store
from ..types import CheckpointInfo
from .maintenance import statuses

__all__ = ["entries", "entry", "entry_of", "listing"]


def entry(info: CheckpointInfo, status: retention.Status | None,
          pinned: bool) -> dict[str, Any]:
    """One checkpoint; ``status`` is ``None`` when the store's policy does not read."""
    return {
        "id": info.id, "name": info.name, "run": info.run, "step": info.step,
        "epoch": info.epoch, "created": info.created,
        "metrics": {k: _finite(v) for k, v in info.metrics.items()},
        "status": None if status is None else {"label": status.label, "state": status.state,
                                               "reasons": list(status.reasons)},
        "pinned": pinned, "named": info.named, "kind": info.kind, "size": info.logical_bytes,
        "new_bytes": info.new_bytes, "tags": list(info.tags),
    }


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def entries(store: Store, infos: list[CheckpointInfo]) -> list[dict[str, Any]]:
    """Entries of ``infos`` (in the order given) with statuses under the store's policy; a
    policy that does not read costs the statuses, not the listing."""
    pins = store.pins.ids()
    try:
        status: dict[str, retention.Status] = statuses(store, infos) if infos else {}
    except CkptError:
        status = {}
    return [entry(i, status.get(i.id), i.id in pins) for i in infos]


def entry_of(store: Store, ckpt_id: str) -> dict[str, Any]:
    """The entry of one checkpoint (its status depends on the others)."""
    for found in entries(store, store.list()):
        if found["id"] == ckpt_id:
            return found
    return entries(store, [store.info(ckpt_id)])[0]


def listing(store: Store) -> dict[str, Any]:
    """Every checkpoint, newest first, and the ones that could not be read."""
    infos = store.list()
    return {"store": store.url, "checkpoints": entries(store, infos[::-1]),
            "unreadable": [{"id": u.id, "problem": u.problem} for u in store.unreadable()]}
