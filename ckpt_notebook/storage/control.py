"""The store's small mutable files, beside the immutable checkpoints.

    pins/<id>                      a checkpoint kept whatever the retention policy says
    policy.json                    the retention policy (JSON of retention.Policy)
    requests/<time>-<rand>.json    "save now" requests for a running training loop
    runs/<run>/history/<seg>.jsonl metric history, one JSON object per recorded step

Each kind of change is one file created or removed, so concurrent processes never need a
read-modify-write of shared state; policy.json is replaced atomically as a whole.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import FormatError, IntegrityError, InvalidArgumentError
from ..types import utc_now
from .backend import Backend
from .trust import check_id, is_id, seal, show_value, unseal

__all__ = ["MetricHistory", "PinSet", "PolicyFile", "RequestQueue"]


class PinSet:
    """Pinned checkpoint ids: retention never prunes them. A pin file is sealed and names its
    checkpoint, so a damaged one is an error, never a silent unpin."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def add(self, ckpt_id: str) -> None:
        doc = {"id": check_id(ckpt_id, where="pin"), "pinned": utc_now()}
        self.backend.write_atomic(f"pins/{ckpt_id}", [seal(doc)], durable=False)

    def remove(self, ckpt_id: str) -> None:
        self.backend.remove(f"pins/{check_id(ckpt_id, where='pin')}")

    def ids(self) -> set[str]:
        """Every pinned id; raises IntegrityError for a pin file that does not check out."""
        out = set()
        for name in self.backend.listdir("pins"):
            if name.startswith("."):
                continue
            where = self.backend.where(f"pins/{name}")
            if not is_id(name):
                raise IntegrityError(f"{where}: a pin file's name must be a checkpoint id; "
                                     "remove it and pin again")
            try:
                raw = self.backend.read_bytes(f"pins/{name}")
            except FileNotFoundError:
                continue  # unpinned while we listed
            if not _legacy_pin(raw):
                doc = unseal(raw, where=where, required=True)
                pinned = doc.get("id") if isinstance(doc, dict) else doc
                if pinned != name:
                    raise IntegrityError(f"{where} is damaged: it pins {show_value(pinned)}; "
                                         f"remove it and pin {name} again")
            out.add(name)
        return out


def _legacy_pin(raw: bytes) -> bool:
    """Pins written before seals hold just the time they were made."""
    try:
        datetime.fromisoformat(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return False
    return True


class PolicyFile:
    """The retention policy shared by every process using the store, as sealed JSON. A
    policy that does not read is an error: a silent default would keep or delete the wrong
    checkpoints."""

    NAME = "policy.json"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def read(self) -> dict[str, Any]:
        """The policy's JSON; ``{}`` when none is set (raises when it does not read)."""
        try:
            raw = self.backend.read_bytes(self.NAME)
        except FileNotFoundError:
            return {}
        doc = unseal(raw, where=self.backend.where(self.NAME))
        if not isinstance(doc, dict):
            raise FormatError(f"{self.backend.where(self.NAME)} is not a JSON object; set the "
                              "policy again (`ckpt policy ...`)")
        return doc

    def write(self, doc: Mapping[str, Any]) -> None:
        self.backend.write_atomic(self.NAME, [seal(dict(doc), indent=1)])


REQUEST_LIFETIME_S = 120.0
"""How long a save request waits for a training loop to take it."""


class RequestQueue:
    """Requests from outside a busy kernel (CLI, dashboard), honoured by ``step()``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def put(self, action: str, *, lifetime_s: float = REQUEST_LIFETIME_S, **fields: Any) -> str:
        """Queue a request; a loop that has not taken it within ``lifetime_s`` never will
        (a request made while no loop ran must not fire minutes later, after a restart)."""
        req_id = f"{time.time_ns()}-{secrets.token_hex(3)}"
        expires = datetime.now(timezone.utc) + timedelta(seconds=lifetime_s)
        doc = {"id": req_id, "action": action, "requested": utc_now(),
               "expires": expires.isoformat(), **fields}
        self.backend.write_atomic(f"requests/{req_id}.json", [json.dumps(doc).encode()])
        return req_id

    def pending(self) -> list[str]:
        return sorted(n for n in self.backend.listdir("requests") if n.endswith(".json"))

    def is_pending(self, req_id: str) -> bool:
        """Whether request ``req_id`` still waits (no loop took it, and no loop dropped it)."""
        return self.backend.exists(f"requests/{req_id}.json")

    def state(self, req_id: str) -> str:
        """``pending``, ``taken`` (a loop claimed it: it left ``<id>.taken``) or ``expired``
        (its lifetime passed, or a loop dropped it unclaimed)."""
        if not _REQUEST_ID.fullmatch(req_id):
            raise InvalidArgumentError(f"{req_id!r} is not a request id")
        try:
            doc = json.loads(self.backend.read_bytes(f"requests/{req_id}.json"))
        except FileNotFoundError:
            return "taken" if self.backend.exists(f"requests/{req_id}.taken") else "expired"
        except ValueError:
            return "expired"  # unreadable: no loop will take it
        return "expired" if _expired(doc) else "pending"

    def take(self, action: str | None = None) -> list[dict[str, Any]]:
        """Claim the pending requests (of ``action``): each is returned to one taker only.
        An expired one is dropped, never taken."""
        taken = []
        for name in self.pending():
            rel = f"requests/{name}"
            try:
                doc = json.loads(self.backend.read_bytes(rel))
            except (FileNotFoundError, ValueError):
                continue
            if action is not None and doc.get("action") != action:
                continue
            if _expired(doc):
                self.backend.remove(rel)
            elif self._claim(name[: -len(".json")]):
                taken.append(doc)
        return taken

    def forget_taken(self, *, max_age_s: float = 24 * 3600, dry_run: bool = False) -> int:
        """Remove the marks of requests taken over ``max_age_s`` ago (gc); returns how many."""
        now, old = time.time(), []
        for name in self.backend.listdir("requests"):
            if name.endswith(".taken"):
                with contextlib.suppress(FileNotFoundError):
                    if now - self.backend.mtime(f"requests/{name}") > max_age_s:
                        old.append(name)
        if not dry_run:
            for name in old:
                self.backend.remove(f"requests/{name}")
        return len(old)

    def _claim(self, req_id: str) -> bool:
        """Take request ``req_id`` if no one else did (:meth:`Backend.claim`: a no-replace
        commit of its ``<id>.taken`` mark, which tells whoever asks)."""
        doc = json.dumps({"id": req_id, "taken": utc_now(), "by": self.backend.writer_id,
                          "claim": secrets.token_hex(8)}).encode()
        return self.backend.claim(f"requests/{req_id}.json", f"requests/{req_id}.taken", doc)


_REQUEST_ID = re.compile(r"\d{1,20}-[0-9a-f]{6}")


def _expired(doc: Mapping[str, Any]) -> bool:
    """Past its ``expires`` time; a request of an older version (none) lives
    :data:`REQUEST_LIFETIME_S` from ``requested``; one whose times do not read is expired."""
    try:
        if isinstance(doc.get("expires"), str):
            expires = datetime.fromisoformat(doc["expires"])
        else:
            expires = datetime.fromisoformat(str(doc.get("requested"))) + timedelta(
                seconds=REQUEST_LIFETIME_S)
        return bool(expires <= datetime.now(timezone.utc))
    except (TypeError, ValueError):  # naive or unreadable times
        return True


class MetricHistory:
    """Per-run metric history in append-only segments (one writer per segment)."""

    SEGMENT_ROWS = 5000

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def runs(self) -> list[str]:
        return sorted(n for n in self.backend.listdir("runs") if not n.startswith("."))

    def write_segment(self, run: str, segment: str, rows: Iterable[Mapping[str, Any]]) -> None:
        body = "".join(json.dumps(dict(r), allow_nan=False) + "\n" for r in rows)
        self.backend.write_atomic(f"runs/{run}/history/{segment}.jsonl", [body.encode()],
                                  durable=False)

    def read(self, run: str) -> list[dict[str, Any]]:
        """Every recorded row of ``run``, ordered by time."""
        rows: list[dict[str, Any]] = []
        for name in sorted(self.backend.listdir(f"runs/{run}/history")):
            with contextlib.suppress(FileNotFoundError):
                text = self.backend.read_bytes(f"runs/{run}/history/{name}").decode()
                for line in text.splitlines():
                    with contextlib.suppress(ValueError):
                        rows.append(json.loads(line))
        rows.sort(key=lambda r: (r.get("time", 0), r.get("step") or 0))
        return rows
