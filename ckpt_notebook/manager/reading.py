"""Reading saved state back: verified blobs -> decoded state trees, and weight exports."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from .. import capture
from ..errors import FormatError, IntegrityError, InvalidArgumentError, RestoreError
from ..storage import Store
from ..storage.manifest import SavedObject, TensorRecord
from ..types import CheckpointInfo, TensorData

__all__ = ["export_weights", "read_states", "refuse_pickles", "split_for_modules", "tensor_of"]


def read_states(store: Store, ckpt_id: str, saved: Mapping[str, SavedObject],
                names: Sequence[str],
                placeholders: Mapping[str, set[str]] | None = None, *,
                allow_pickle: bool = False) -> dict[str, Any]:
    """Read, verify and decode the saved state of ``names`` (blobs read in parallel).

    Tensors listed in ``placeholders`` (object -> tensor paths) are not read: they decode to
    data-less stand-ins, for a caller that reads them in place later. Pickled values are
    refused unless ``allow_pickle``: this is the one place saved state is decoded, so no
    reader can unpickle what a store holds without the caller's consent.
    """
    from ..capture.arrays import data_to_ndarray
    from ..storage import tensorfile

    refuse_pickles(ckpt_id, saved, names, allow_pickle)
    placeholders = placeholders or {}
    wanted: dict[str, int] = {}
    where: dict[str, str] = {}
    for name in names:
        for t in saved[name].tensors:
            if t.path in placeholders.get(name, ()):
                continue
            wanted[t.blob] = t.blob_size
            where.setdefault(t.blob, f"checkpoint {ckpt_id}: {name}: tensor {t.path}")
    digests = list(wanted)
    bufs = store.blobs.read_many([(d, wanted[d], where[d]) for d in digests])
    files = {d: tensorfile.decode(b, where=where[d]) for d, b in zip(digests, bufs, strict=True)}
    states = {}
    for name in names:
        obj = saved[name]
        arrays = []
        for t in obj.tensors:
            if t.path in placeholders.get(name, ()):
                from ..capture.torch import placeholder

                arrays.append(placeholder(t.dtype, list(t.shape)))
                continue
            data = tensor_of(files[t.blob], t, where=f"checkpoint {ckpt_id}: {name}")
            if t.array == "numpy":
                arrays.append(data_to_ndarray(data))
            else:
                from ..capture.torch import data_to_tensor

                arrays.append(data_to_tensor(data))
        pickles = [bytes(store.blobs.read(
            p.blob, p.size,
            where=f"checkpoint {ckpt_id}: {name}" + (f": {p.path}" if p.path else "")))
            for p in obj.pickles] if allow_pickle else []
        try:
            states[name] = capture.Decoder(arrays, pickles).decode(obj.state)
        except (RestoreError, FormatError):
            raise
        except Exception as err:  # an unpickled class that no longer imports, and the like
            raise RestoreError(f"cannot restore {name!r} from checkpoint {ckpt_id}: its "
                               f"saved state failed to load ({type(err).__name__}: {err})"
                               ) from err
    return states


def tensor_of(blob: Mapping[str, TensorData], record: TensorRecord, *,
              where: str) -> TensorData:
    """The tensor a manifest record names, which must be what the record says it is."""
    data = blob.get(record.key)
    if data is None or data.dtype != record.dtype or tuple(data.shape) != record.shape:
        raise IntegrityError(f"{where}: tensor {record.path} does not match its blob "
                             f"{record.blob[:16]} (key {record.key!r}); the manifest is "
                             "damaged or was crafted")
    return data


def export_weights(store: Store, info: CheckpointInfo, out: str | os.PathLike[str]) -> list[str]:
    out = os.fspath(out)
    fmt = "safetensors" if out.endswith(".safetensors") else "pt"
    if not out.endswith((".safetensors", ".pt", ".pth")):
        raise InvalidArgumentError(f"cannot export to {out!r}: the file must end in "
                                   ".safetensors or .pt", path=out)
    saved = store.manifest(info.id).objects
    modules = [n for n, o in saved.items() if o.kind == "module"]
    if not modules:
        raise RestoreError(f"checkpoint {info.id} holds no model (no torch module) to export")
    states = read_states(store, info.id, saved, modules)  # never unpickles
    tensors = states[modules[0]] if len(modules) == 1 else {
        f"{m}.{k}": v for m in modules for k, v in states[m].items()}
    from ..capture.torch import save_weights_file

    tmp = f"{out}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        save_weights_file(tensors, f, fmt=fmt)
    os.replace(tmp, out)
    return list(tensors)


def split_for_modules(tensors: Mapping[str, Any], modules: Mapping[str, Any], *,
                      where: str) -> dict[str, dict[str, Any]]:
    """Which tracked module a plain state dict belongs to: the only one, or by prefix."""
    if not modules:
        raise RestoreError(f"cannot load {where}: no torch module is tracked to load it into")
    if len(modules) == 1:
        return {next(iter(modules)): dict(tensors)}
    out: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if head not in modules:
            raise RestoreError(f"cannot load {where}: key {key!r} does not start with one of "
                               f"the tracked modules ({', '.join(modules)})")
        out.setdefault(head, {})[rest] = value
    return out


def refuse_pickles(ckpt_id: str, saved: Mapping[str, SavedObject], plan: Sequence[str],
                   allow: bool) -> None:
    if allow:
        return
    for name in plan:
        pickled = saved[name].pickles
        if pickled:
            path = pickled[0].path or "the value"
            raise RestoreError(
                f"checkpoint {ckpt_id} holds pickled data in {name!r} ({path})", ref=ckpt_id,
                hint="restore with allow_pickle=True only if you trust whoever wrote it",
                keyword="allow_pickle=True")
