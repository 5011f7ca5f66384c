"""Plain data shared by every layer: what a checkpoint is, what a restore did.

Nothing here imports torch or touches storage; everything is a frozen dataclass that can be
built from, and turned back into, the JSON of a manifest or the index.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from .errors import InvalidNameError

__all__ = [
    "DATA_ALIGN",
    "DATA_PHASE",
    "OWN_BLOB_MIN",
    "ArrayKind",
    "CheckpointInfo",
    "ObjectKind",
    "ObjectReport",
    "Progress",
    "RestoreReport",
    "TensorData",
    "format_bytes",
    "is_valid_name",
    "utc_now",
    "validate_name",
]

Kind = Literal["state", "files"]
ObjectKind = Literal["module", "optimizer", "scheduler", "scaler", "stateful", "generator",
                     "value", "rng"]
"""What a saved object is: how the capture layer classifies it, or ``rng``."""
ArrayKind = Literal["torch", "numpy"]
"""What a saved array restores as."""

Progress = Callable[[int, int], None]
"""A transfer's progress callback: ``(bytes done, bytes in all)``; ``done`` only grows."""

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
NAME_RULE = ("1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.', and not a REF "
             "keyword (latest, last, best.<metric>)")
_RESERVED = ("latest", "last")


def is_valid_name(name: object) -> bool:
    return (isinstance(name, str) and bool(_NAME_RE.fullmatch(name)) and not name.startswith(".")
            and name not in _RESERVED and not name.startswith("best."))


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid checkpoint name, else raise :class:`InvalidNameError`."""
    if not is_valid_name(name):
        raise InvalidNameError(f"invalid checkpoint name {name!r}: names are {NAME_RULE}")
    return name


def utc_now() -> str:
    """The current time as an ISO-8601 UTC string with microseconds (sortable as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def format_bytes(n: int | None) -> str:
    """``1536`` -> ``'1.5 KiB'``; ``None`` -> ``'-'``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


DATA_ALIGN = 4096
"""Block size for direct I/O: file offsets, lengths and addresses are multiples of it."""
DATA_PHASE = 64
"""Where a large tensor's bytes begin within a :data:`DATA_ALIGN` block, in memory and in a
single-tensor blob. Large torch CPU tensors begin here (torch aligns to 64 bytes and glibc
serves large blocks from fresh pages), and snapshot buffers are placed here, so such blobs
can be written from the tensor's memory with direct I/O, without a copy."""
OWN_BLOB_MIN = 1 << 20
"""Tensors of at least this many bytes get a blob of their own; smaller ones are packed."""


@dataclass(frozen=True)
class TensorData:
    """One array as raw bytes, independent of any framework.

    ``dtype`` is a safetensors dtype code (``F32``, ``BF16``, ``I64``, ``BOOL``...), ``data``
    holds exactly ``prod(shape) * itemsize`` C-contiguous bytes.
    """

    dtype: str
    shape: tuple[int, ...]
    data: memoryview

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


@dataclass(frozen=True)
class CheckpointInfo:
    """What one checkpoint is, as listed by the store.

    ``logical_bytes`` is the size of its state; ``new_bytes`` what this save added to the
    store (blobs it did not have yet). ``committed`` is False for the value an asynchronous
    :meth:`Checkpointer.save` returns before the background write finished.
    """

    id: str
    run: str | None = None
    step: int | None = None
    epoch: int | None = None
    created: str = ""
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    tags: Sequence[str] = ()
    name: str | None = None
    parent: str | None = None
    kind: Kind = "state"
    objects: Sequence[str] = ()
    logical_bytes: int = 0
    new_bytes: int | None = None
    notebook: str | None = None
    source: str | None = None
    committed: bool = True

    @property
    def named(self) -> bool:
        """Named checkpoints are immutable and never pruned."""
        return self.name is not None

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["metrics"] = dict(self.metrics)
        data["tags"] = list(self.tags)
        data["objects"] = list(self.objects)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckpointInfo:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["tags"] = tuple(known.get("tags", ()))
        known["objects"] = tuple(known.get("objects", ()))
        known["metrics"] = dict(known.get("metrics", {}))
        return cls(**known)

    def __str__(self) -> str:
        parts = [self.id]
        if self.step is not None:
            parts.append(f"step {self.step}")
        parts += [f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in self.metrics.items()]
        parts.append(format_bytes(self.logical_bytes))
        if self.new_bytes is not None:
            parts.append(f"{format_bytes(self.new_bytes)} new")
        if not self.committed:
            parts.append("(saving)")
        return "  ".join(parts)


@dataclass(frozen=True)
class ObjectReport:
    """What restore did to one tracked object."""

    name: str
    status: Literal["restored", "skipped", "not in checkpoint"]
    kind: str = ""
    missing_keys: Sequence[str] = ()
    unexpected_keys: Sequence[str] = ()
    note: str = ""


@dataclass(frozen=True)
class RestoreReport:
    """The outcome of a restore: each object, the plain values, and whether RNG came back.

    ``mapped``: per module whose saved keys were renamed onto its own, how (a wrapper's
    prefix, ``module. -> (none)``, and the ``key_map`` entries used). Renders as an HTML
    table in notebooks and as text elsewhere.
    """

    checkpoint: CheckpointInfo
    objects: Sequence[ObjectReport] = ()
    values: Mapping[str, Any] = field(default_factory=dict)
    rng_restored: bool = False
    rng_note: str = ""
    unused: Sequence[str] = ()
    mapped: Mapping[str, str] = field(default_factory=dict)

    @property
    def restored(self) -> list[str]:
        return [o.name for o in self.objects if o.status == "restored"]

    def _rows(self) -> list[tuple[str, str, str, str]]:
        rows: list[tuple[str, str, str, str]] = []
        for o in self.objects:
            detail = []
            if o.missing_keys:
                detail.append("missing: " + ", ".join(o.missing_keys))
            if o.unexpected_keys:
                detail.append("unexpected: " + ", ".join(o.unexpected_keys))
            if o.note:
                detail.append(o.note)
            rows.append((o.name, o.kind, o.status, "; ".join(detail)))
        for name in self.values:
            rows.append((name, "value", "restored", ""))
        for name in self.unused:
            rows.append((name, "", "in checkpoint, not tracked", ""))
        rows.append(("rng", "rng", "restored" if self.rng_restored else "not restored",
                     self.rng_note))
        return rows

    @property
    def _where(self) -> str:
        """`` (run 'runB', step 7)``: which run's checkpoint this was, and its step."""
        parts = [] if self.checkpoint.run is None else [f"run {self.checkpoint.run!r}"]
        if self.checkpoint.step is not None:
            parts.append(f"step {self.checkpoint.step}")
        return f" ({', '.join(parts)})" if parts else ""

    def __str__(self) -> str:
        head = f"Restored {self.checkpoint.id}{self._where}"
        rows = self._rows()
        width = max(len(r[0]) for r in rows)
        lines = [head] + [
            f"  {name:<{width}}  {status}" + (f"  [{detail}]" if detail else "")
            for name, _kind, status, detail in rows
        ]
        lines += [f"  keys of {name} mapped: {how}" for name, how in self.mapped.items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        cells = "".join(
            f"<tr><td>{esc(n)}</td><td>{esc(k)}</td><td>{esc(s)}</td><td>{esc(d)}</td></tr>"
            for n, k, s, d in self._rows()
        )
        mapped = "".join(f"<p>keys of {esc(n)} mapped: {esc(how)}</p>"
                         for n, how in self.mapped.items())
        return (
            f"<div><b>Restored {esc(self.checkpoint.id)}</b>{esc(self._where)}"
            "<table><thead><tr><th>object</th><th>kind</th><th>status</th><th>details</th>"
            f"</tr></thead><tbody>{cells}</tbody></table>{mapped}</div>"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def __repr__(self) -> str:
        return f"<RestoreReport {self.checkpoint.id}: {', '.join(self.restored) or 'nothing'}>"
