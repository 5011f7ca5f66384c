"""REFs: how a user names a checkpoint (``latest``, ``best.<metric>``, an id, a name...)."""

from __future__ import annotations

import difflib
import os
import secrets
from datetime import datetime, timezone

from .. import retention
from ..errors import CheckpointNotFoundError
from ..storage import Store
from ..types import CheckpointInfo, is_valid_name

__all__ = ["is_weights_file", "new_id", "read_url_bytes", "resolve_ref"]

_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def new_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def resolve_ref(store: Store, ref: str) -> CheckpointInfo:
    infos = store.list()
    if ref in ("latest", "last"):
        found = retention.latest(infos)
        if found is None:
            raise CheckpointNotFoundError(f"no checkpoints in {store.url} yet; save one first")
        return found
    try:
        best_ref = retention.parse_best_ref(ref)
    except ValueError as err:
        raise CheckpointNotFoundError(str(err)) from err
    if best_ref is not None:
        found = retention.best(infos, *best_ref)
        if found is None:
            raise CheckpointNotFoundError(f"no checkpoint in {store.url} has metric "
                                          f"{best_ref[0]!r}")
        return found
    by_id = {i.id: i for i in infos}
    if ref in by_id:
        return by_id[ref]
    if is_valid_name(ref) and store.exists(ref):  # a manifest the listing could not read
        return store.info(ref)  # raises the reason (bad JSON, newer format, ...)
    prefixed = [i for i in infos if i.id.startswith(ref)] if len(ref) >= 4 else []
    if len(prefixed) == 1:
        return prefixed[0]
    near = difflib.get_close_matches(ref, list(by_id), n=3, cutoff=0.4)
    newest = [i.id for i in infos[-3:]]
    hint = (f"; nearest: {', '.join(near)}" if near else
            f"; newest: {', '.join(newest)}" if newest else "; the store is empty")
    what = "is ambiguous" if prefixed else "names no checkpoint"
    raise CheckpointNotFoundError(f"REF {ref!r} {what} in {store.url}{hint}")


def is_weights_file(ref: str) -> bool:
    return ref.lower().endswith(_WEIGHT_SUFFIXES) and ("/" in ref or os.path.exists(ref)
                                                       or "://" in ref)


def read_url_bytes(url: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(url, "rb") as f:
            return bytes(f.read())
    except FileNotFoundError as err:
        raise CheckpointNotFoundError(f"no file at {url!r}") from err
