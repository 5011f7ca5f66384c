"""What the store checks about everything it reads: a store may be hostile or rotten.

Three rules, kept at the boundary where data leaves a file (see docs/format.md, "Trust"):

- **Names are checked where they are read**, by the same rules as when they are written:
  checkpoint ids, blob digests and the relative paths of copied files. A manifest at
  ``manifests/evil.json`` whose id is ``../../victim`` is refused before anything uses it.
- **Every path below the store is proven to stay inside it** (:func:`store_path`), so even a
  name that slipped past the first rule cannot make a write or delete land outside.
- **Metadata is sealed like blobs are**: a JSON control file (manifest, index, pin, policy)
  ends with ``"content_digest": "<BLAKE3>"``, the hash of the file with that digest zeroed.
  A bit flip anywhere in it is an :class:`~ckpt_notebook.errors.IntegrityError` naming the
  file. Files written before seals existed carry none and are read as they are.

A seal guards against rot and accidents, not against a forger: whoever can write a store can
also write a valid seal. What a hostile store cannot do is decided by the other two rules and
by restore never unpickling without the caller's consent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import FormatError, IntegrityError, UnsafePathError
from .hashing import hash_bytes

__all__ = [
    "DIGEST_KEY",
    "check_digest",
    "check_id",
    "check_relpath",
    "is_digest",
    "is_id",
    "seal",
    "show_value",
    "store_path",
    "unseal",
]

DIGEST_KEY = "content_digest"
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_TAIL = re.compile(rb'"' + DIGEST_KEY.encode() + rb'":"([0-9a-f]{64})"}\Z')
_ZEROS = b"0" * 64
_SEAL_HEAD = b'"' + DIGEST_KEY.encode() + b'":"'
_SEAL_LEN = len(_SEAL_HEAD) + 64 + 2
_HEX = frozenset(b"0123456789abcdef")


def is_digest(text: object) -> bool:
    """A BLAKE3 hex digest as blobs are named: 64 lowercase hex characters."""
    return isinstance(text, str) and bool(_DIGEST_RE.fullmatch(text))


def is_id(text: object) -> bool:
    """A checkpoint id or name as it may appear in a file name: 1-128 of ``A-Z a-z 0-9 . _ -``,
    not starting with ``.`` (so never ``.`` or ``..``)."""
    return isinstance(text, str) and bool(_ID_RE.fullmatch(text)) and not text.startswith(".")


def check_digest(text: object, *, where: str) -> str:
    if not is_digest(text):
        raise FormatError(f"{where}: {show_value(text)} is not a blob digest (64 lowercase hex "
                          "characters); the store is damaged or was crafted")
    assert isinstance(text, str)
    return text


def check_id(text: object, *, where: str) -> str:
    if not is_id(text):
        raise FormatError(f"{where}: {show_value(text)} is not a checkpoint id (1-128 "
                          "characters of A-Z a-z 0-9 . _ -, not starting with '.'); the store "
                          "is damaged or was crafted")
    assert isinstance(text, str)
    return text


def check_relpath(text: object, *, where: str) -> str:
    """A relative file path inside a checkpoint: ``/``-separated, no empty, ``.`` or ``..``
    part, no backslash, drive or NUL; it can only name something below the folder."""
    if not isinstance(text, str) or not text or _escapes(text) or text[1:2] == ":":
        raise UnsafePathError(f"{where}: refusing file path {show_value(text)}: it could lead "
                              "outside the folder it is written to")
    return text


def store_path(root: str, rel: str) -> str:
    """``root/rel``, refusing any ``rel`` that could name something outside ``root``."""
    if not rel:
        return root
    if _escapes(rel):
        raise UnsafePathError(f"refusing store path {rel!r}: it leads outside the store "
                              f"{root!r}; the store is damaged or was crafted")
    return f"{root}/{rel}"


def _escapes(rel: str) -> bool:
    """Whether a ``/``-separated relative path could name anything but a file below its
    folder: absolute, an empty, ``.`` or ``..`` part, a backslash or a NUL."""
    return (rel.startswith("/") or "\\" in rel or "\x00" in rel
            or any(part in ("", ".", "..") for part in rel.split("/")))


def seal(doc: dict[str, Any], *, indent: int | None = None) -> bytes:
    """``doc`` as JSON that ends with its own content digest (see the module docstring)."""
    body = {k: v for k, v in doc.items() if k != DIGEST_KEY}
    seps = (",", ":") if indent is None else (",", ": ")
    head = json.dumps(body, separators=seps, indent=indent, allow_nan=False).encode()
    head = head[:-1].rstrip()  # without the closing brace
    joint = (b"" if head == b"{" else b",") + (b"" if indent is None else b"\n")
    raw = head + joint + b'"' + DIGEST_KEY.encode() + b'":"' + _ZEROS + b'"}'
    digest = hash_bytes(raw).encode()
    return raw[:-66] + digest + raw[-2:]


def unseal(raw: bytes, *, where: str, required: bool = False) -> Any:
    """Parse sealed JSON, checking its seal; an unsealed file is parsed as it is, unless
    ``required``. Raises IntegrityError on a mismatch and FormatError on bad JSON."""
    tail = _TAIL.search(raw[-96:])
    if tail is not None:
        got = tail.group(1)
        if hash_bytes(raw[:-66] + _ZEROS + raw[-2:]).encode() != got:
            raise IntegrityError(f"{where} is corrupt: its bytes do not match its "
                                 f"{DIGEST_KEY}; restore it from a copy, or remove it "
                                 "(`ckpt verify --all` lists what it affects)")
    elif required or _damaged_seal(raw[-_SEAL_LEN:]):
        raise IntegrityError(f"{where} is corrupt: its {DIGEST_KEY} seal is damaged or "
                             "missing; restore it from a copy, or remove it")
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise FormatError(f"{where} is not valid JSON ({err})") from err
    if isinstance(doc, dict):
        doc.pop(DIGEST_KEY, None)
    return doc


def _damaged_seal(tail: bytes) -> bool:
    """Whether the file's end is a seal with a byte or two changed (a flip in the key's name
    or the digest's text), rather than the end of a file written before seals."""
    if len(tail) != _SEAL_LEN:
        return False
    head, hexes, end = tail[:len(_SEAL_HEAD)], tail[len(_SEAL_HEAD):-2], tail[-2:]
    changed = (sum(a != b for a, b in zip(head, _SEAL_HEAD, strict=True))
               + sum(c not in _HEX for c in hexes) + sum(a != b for a, b in zip(end, b'"}',
                                                                              strict=True)))
    return 0 < changed <= 2


def show_value(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
