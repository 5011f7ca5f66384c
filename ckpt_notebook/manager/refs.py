"""REFs: how a user names a checkpoint (``latest``, ``best.<metric>``, an id, a name...)."""

from __future__ import annotations

import difflib
import os
import secrets
from datetime import datetime, timezone

from .. import retention
from ..errors import CheckpointNotFoundError, IntegrityError
from ..storage import Store
from ..storage.options import inherited_options
from ..types import CheckpointInfo, is_valid_name

__all__ = ["CHECKPOINT_PREFIX", "is_run_keyword", "is_weights_file", "names_weights_file", "new_id",
           "read_url_bytes", "resolve_ref"]

_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
CHECKPOINT_PREFIX = "ckpt:"


def new_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def resolve_ref(store: Store, ref: str, *, run: str | None = None) -> CheckpointInfo:
    """The checkpoint ``ref`` names. ``ckpt:REF`` says it is a checkpoint, not a file.

    ``latest`` and ``best.<metric>`` mean run ``run``'s when one is given (a Checkpointer's,
    a notebook's), else the whole store's; ``latest@RUN`` names a run, ``latest@any`` any.
    """
    ref = ref.removeprefix(CHECKPOINT_PREFIX)
    infos = store.list()
    keyword, at, scope = ref.partition("@")
    if is_run_keyword(keyword):
        return _resolve_keyword(store, infos, keyword, scope if at else run, ref)
    return _resolve_id(store, infos, ref)


ANY_RUN = "any"


def is_run_keyword(ref: str) -> bool:
    """Whether ``ref`` is ``latest``/``best.<metric>`` (whose meaning depends on the run)."""
    keyword = ref.removeprefix(CHECKPOINT_PREFIX).partition("@")[0]
    return keyword in ("latest", "last") or keyword.startswith("best.")


def _resolve_keyword(store: Store, infos: list[CheckpointInfo], keyword: str,
                     run: str | None, ref: str) -> CheckpointInfo:
    """``latest`` / ``best.<metric>`` among ``run``'s checkpoints (all for ``None``/``any``)."""
    mine = infos if run in (None, ANY_RUN) else [i for i in infos if i.run == run]
    of_run = "" if run in (None, ANY_RUN) else f" of run {run!r}"
    other = "" if mine == infos or not infos else (
        f"other runs have some: '{keyword}@{ANY_RUN}' names the {keyword} of any run")
    if keyword in ("latest", "last"):
        found = retention.latest(mine)
        _nothing_newer_lost(store, found)
        if found is None:
            raise CheckpointNotFoundError(f"no checkpoints{of_run} in {store.url} yet",
                                          ref=ref, url=store.url,
                                          hint="save one first" + (f"; {other}" if other else ""))
        return found
    try:
        best_ref = retention.parse_best_ref(keyword)
    except ValueError as err:
        raise CheckpointNotFoundError(str(err), ref=ref, url=store.url) from err
    if best_ref is None:
        raise CheckpointNotFoundError(f"bad REF {ref!r}: say best.<metric>", ref=ref,
                                      url=store.url)
    found = retention.best(mine, *best_ref)
    if found is None:
        raise CheckpointNotFoundError(f"no checkpoint{of_run} in {store.url} has metric "
                                      f"{best_ref[0]!r}", ref=ref, url=store.url,
                                      hint=other or None)
    return found


def _resolve_id(store: Store, infos: list[CheckpointInfo], ref: str) -> CheckpointInfo:
    by_id = {i.id: i for i in infos}
    if ref in by_id:
        return by_id[ref]
    if is_valid_name(ref) and store.exists(ref):  # a manifest the listing could not read
        return store.info(ref)  # raises the reason (bad JSON, newer format, ...)
    prefixed = [i for i in infos if i.id.startswith(ref)] if len(ref) >= 4 else []
    if len(prefixed) == 1:
        return prefixed[0]
    lost = next((u for u in store.unreadable() if u.id == ref), None)
    if lost is not None:
        raise IntegrityError(f"checkpoint {lost} in {store.url}; `ckpt delete {ref} --force` "
                             "accepts the loss")
    near = difflib.get_close_matches(ref, list(by_id), n=3, cutoff=0.4)
    newest = [i.id for i in reversed(infos[-3:])]
    more = f" and {len(prefixed) - _SHOWN} more" if len(prefixed) > _SHOWN else ""
    hint = (f"it matches {', '.join(i.id for i in prefixed[:_SHOWN])}{more}" if prefixed else
            f"nearest: {', '.join(near)}" if near else
            f"newest: {', '.join(newest)}" if newest else "the store is empty")
    what = "is ambiguous" if prefixed else "names no checkpoint"
    raise CheckpointNotFoundError(f"REF {ref!r} {what} in {store.url}", ref=ref, url=store.url,
                                  hint=hint)


_SHOWN = 5
"""How many candidates an ambiguous REF's error lists."""


def _nothing_newer_lost(store: Store, found: CheckpointInfo | None) -> None:
    """``latest`` must never quietly mean an older checkpoint because the newest one's
    manifest went missing or bad."""
    lost = [u for u in store.unreadable()
            if found is None or u.created is None or u.created > found.created]
    if lost:
        older = f"; restore {found.id} by its id if that is what you want" if found else ""
        raise IntegrityError(
            f"'latest' in {store.url} cannot be told: checkpoint {lost[-1]}; see `ckpt verify "
            f"--all`, then `ckpt repair --from OTHER_STORE`, or `ckpt delete {lost[-1].id} "
            f"--force` to accept the loss{older}")


def is_weights_file(ref: str) -> bool:
    return ref.lower().endswith(_WEIGHT_SUFFIXES) and ("/" in ref or os.path.exists(ref)
                                                       or "://" in ref)


def names_weights_file(store: Store, ref: str) -> bool:
    """Whether ``ref`` names a plain weights file rather than a checkpoint; a bare name that
    is both (a local ``model.safetensors`` and a checkpoint of that name) is refused."""
    if not is_weights_file(ref):
        return False
    if "/" not in ref and is_valid_name(ref) and store.exists(ref):
        raise CheckpointNotFoundError(
            f"REF {ref!r} is both a checkpoint in {store.url} and a file in this folder",
            ref=ref, url=store.url,
            hint=f"say which: './{ref}' for the file, or '{CHECKPOINT_PREFIX}{ref}' for the "
                 "checkpoint")
    return True


def read_url_bytes(url: str, store: Store | None = None) -> bytes:
    """The bytes at ``url``, opened with ``store``'s storage options when it speaks the same
    protocol (its credentials and endpoint)."""
    import fsspec

    options = inherited_options(url, store.url, store.backend.storage_options) if store else {}
    try:
        with fsspec.open(url, "rb", **options) as f:
            data = bytes(f.read())
    except FileNotFoundError as err:
        raise CheckpointNotFoundError(f"no file at {url!r}", ref=url, url=url) from err
    from .sources import check_not_lfs_pointer, lfs_advice  # sources imports this module

    check_not_lfs_pointer(data[:64], where=url, advice=lfs_advice(url))
    return data
