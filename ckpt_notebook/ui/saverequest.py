"""``ckpt request-save``: ask a running loop to save, and say what became of the request.

A request lives :data:`~ckpt_notebook.storage.control.REQUEST_LIFETIME_S` (``--lifetime``)
and a loop's ``step()`` looks about once a second, so the report says when it expires, and
with ``--wait`` whether a loop took it.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..storage import Store

__all__ = ["request_save_report"]


def request_save_report(store: Store, *, tags: list[str], lifetime_s: float,
                        wait_s: float) -> str:
    from ..manager import maintenance

    fields = {"tags": list(tags)} if tags else {}
    req_id = maintenance.request_save(store, lifetime_s=lifetime_s, **fields)
    expires = datetime.now(timezone.utc) + timedelta(seconds=lifetime_s)
    head = (f"requested a save ({req_id}): the training loop using {store.url} saves at its "
            "next step() (Checkpointer.step() or session().step() check about once a second)")
    if wait_s > 0:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and store.requests.is_pending(req_id):
            time.sleep(min(0.1, wait_s))
        if not store.requests.is_pending(req_id):
            return f"{head}; a training loop took it"
        return (f"{head}; no training loop took it within {wait_s:g} s: it waits until "
                f"{expires:%H:%M:%S} UTC, then expires")
    return f"{head}; it expires at {expires:%H:%M:%S} UTC (in {lifetime_s:g} s) if none does"
