"""The restore pipeline behind :meth:`Checkpointer.restore`: all of it or none.

A restore plans what to load, reads and verifies the saved state (large module tensors are
read straight into the model, see storage/inplace.py), checks that every object fits, and only
then loads: the non-modules first (a failure rolls them back), then the pre-checked modules.
A plain ``.safetensors`` / ``.pt`` state dict restores into the tracked modules.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import capture
from ..errors import RestoreError
from ..storage import Store
from ..storage.inplace import read_tensor_into, verify_blobs
from ..storage.manifest import SavedObject, TensorRecord
from ..types import CheckpointInfo, ObjectReport, RestoreReport
from .reading import read_states, refuse_pickles, split_for_modules
from .refs import read_url_bytes

__all__ = [
    "DirectReads",
    "direct_reads",
    "refuse_files",
    "refuse_no_match",
    "restore_state",
    "restore_weights_file",
    "verify_blobs",
]


def restore_state(store: Store, info: CheckpointInfo, objects: MutableMapping[str, Any], *,
                  rng: bool, weights_only: bool, strict: bool,
                  allow_pickle: bool) -> RestoreReport:
    """Load checkpoint ``info`` into ``objects`` (plain values are re-bound in it)."""
    refuse_files(info)
    saved = store.manifest(info.id).objects
    plan = restore_plan(saved, objects, rng=rng, weights_only=weights_only)
    refuse_pickles(info.id, saved, plan, allow_pickle)
    direct = direct_reads(info.id, saved, plan, objects)
    states = read_states(store, info.id, saved, plan,
                         placeholders={n: set(d.paths) for n, d in direct.items()},
                         allow_pickle=allow_pickle)
    verify_blobs(store.blobs, [item for d in direct.values() for item in d.blobs])
    reports = check_all(saved, states, objects, strict)
    load_all(store, saved, states, objects, strict, direct)
    rng_note = ""
    rng_restored = capture.RNG_NAME in states
    if rng_restored:
        from ..capture.torch import restore_rng

        rng_note = restore_rng(states[capture.RNG_NAME])
    values = {n: states[n] for n in plan if saved[n].kind == "value"}
    for n, v in values.items():
        if n in objects:
            objects[n] = v
    for n in objects:
        if n not in plan:
            reports.append(ObjectReport(n, "skipped" if n in saved else "not in checkpoint",
                                        capture.classify(objects[n])))
    unused = [n for n in saved if n not in plan and n not in objects
              and n != capture.RNG_NAME]
    return RestoreReport(info, reports, values, rng_restored, rng_note, unused)


def restore_plan(saved: Mapping[str, SavedObject], objects: Mapping[str, Any], *, rng: bool,
                 weights_only: bool) -> list[str]:
    plan = []
    for name, obj in saved.items():
        kind = obj.kind
        if name == capture.RNG_NAME:
            if rng and not weights_only:
                plan.append(name)
        elif weights_only:
            if kind == "module" and name in objects:
                plan.append(name)
        elif name in objects or kind == "value":
            plan.append(name)
    if weights_only and not plan:
        raise RestoreError("nothing to restore: the checkpoint has no module named like a "
                           f"tracked one (tracked: {', '.join(objects) or 'none'})")
    return plan


def check_all(saved: Mapping[str, SavedObject], states: Mapping[str, Any],
              objects: Mapping[str, Any], strict: bool) -> list[ObjectReport]:
    reports = []
    for name, state in states.items():
        if name == capture.RNG_NAME or saved[name].kind == "value":
            continue
        obj = objects[name]
        kind = capture.classify(obj)
        missing, unexpected = capture.check_fits(name, kind, obj, state, strict=strict,
                                                 saved_kind=saved[name].kind)
        if kind == "module":
            refuse_no_match(name, obj, missing, unexpected, source="the checkpoint")
        reports.append(ObjectReport(name, "restored", kind, missing, unexpected))
    return reports


def load_all(store: Store, saved: Mapping[str, SavedObject], states: Mapping[str, Any],
             objects: Mapping[str, Any], strict: bool,
             direct: Mapping[str, DirectReads]) -> None:
    """Non-modules first (a failure rolls them back), then the pre-checked modules (large
    tensors read straight into them, the rest through ``load_state_dict``)."""
    names = [n for n in states if n != capture.RNG_NAME and saved[n].kind != "value"]
    first = [n for n in names if saved[n].kind != "module"]
    done: list[tuple[str, str, Any]] = []
    try:
        for name in first:
            obj = objects[name]
            kind = capture.classify(obj)
            backup = _backup_state(obj, kind)
            capture.load_into(name, kind, obj, states[name], strict=strict)
            done.append((name, kind, backup))
    except Exception:
        for name, kind, backup in reversed(done):
            with contextlib.suppress(Exception):
                capture.load_into(name, kind, objects[name], backup, strict=False)
        raise
    for name in names:
        if name in first:
            continue
        state = states[name]
        if name in direct:
            direct[name].read(store)
            state = {k: v for k, v in state.items() if k not in direct[name].paths}
        capture.load_into(name, "module", objects[name], state,
                          strict=strict and name not in direct)


def restore_weights_file(store: Store, ref: str, objects: Mapping[str, Any], *,
                         strict: bool) -> RestoreReport:
    """Load a plain ``.safetensors`` / ``.pt`` state dict (path or URL) into the modules."""
    from ..capture.torch import load_weights_file

    raw = read_url_bytes(ref, store)
    tensors = load_weights_file(raw, where=ref)
    modules = {n: o for n, o in objects.items() if capture.classify(o) == "module"}
    targets = split_for_modules(tensors, modules, where=ref)
    reports = []
    for name, state in targets.items():
        missing, unexpected = capture.check_fits(name, "module", modules[name], state,
                                                 strict=strict, saved_kind="module")
        refuse_no_match(name, modules[name], missing, unexpected, source=ref)
        reports.append(ObjectReport(name, "restored", "module", missing, unexpected))
    for name, state in targets.items():
        capture.load_into(name, "module", modules[name], state, strict=strict)
    info = CheckpointInfo(id=os.path.basename(ref), kind="state", objects=tuple(targets))
    return RestoreReport(info, reports, rng_note="weights file: no RNG state")


def _backup_state(obj: Any, kind: str) -> Any:
    if kind == "generator":
        from ..capture.stateful import generator_family

        family = generator_family(obj)
        return (obj.bit_generator.state if family == "numpy"
                else obj.getstate() if family == "python" else obj.get_state())
    return obj.state_dict()


# -- which saved tensors a restore reads straight into the model -------------------------------
@dataclass
class DirectReads:
    """One module's large tensors to read in place: (manifest entry, destination) pairs."""

    where: str
    entries: list[tuple[TensorRecord, Any]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [t.path for t, _ in self.entries]

    @property
    def blobs(self) -> list[tuple[str, int, str]]:
        return [(t.blob, t.blob_size, f"{self.where}: tensor {t.path}")
                for t, _ in self.entries]

    def read(self, store: Store) -> None:
        from ..capture.torch import writable_memory

        for t, target in self.entries:
            read_tensor_into(store.blobs, t.blob, t.key, writable_memory(target),
                             where=f"{self.where}: tensor {t.path}")


def direct_reads(ckpt_id: str, saved: Mapping[str, SavedObject], plan: Sequence[str],
                 objects: Mapping[str, Any]) -> dict[str, DirectReads]:
    """Per module: tensors alone in their blob whose destination is a contiguous CPU tensor
    of the same dtype and shape (others go through ``load_state_dict``)."""
    out: dict[str, DirectReads] = {}
    for name in plan:
        obj = objects.get(name)
        if saved[name].kind != "module" or obj is None or capture.classify(obj) != "module":
            continue
        from ..capture.torch import TORCH_TO_ST, direct_targets

        targets = direct_targets(obj)
        reads = DirectReads(f"checkpoint {ckpt_id}: {name}")
        for t in saved[name].tensors:
            target = targets.get(t.path)
            if (t.key == "t" and t.array == "torch" and target is not None
                    and TORCH_TO_ST.get(target.dtype) == t.dtype
                    and tuple(target.shape) == t.shape):
                reads.entries.append((t, target))
        if reads.entries:
            out[name] = reads
    return out


def refuse_files(info: CheckpointInfo) -> None:
    """A files checkpoint (a copied folder) holds no training state: restoring it would load
    nothing and still say "Restored"."""
    if info.kind == "files":
        label = info.name or info.id
        raise RestoreError(f"{label!r} is a files checkpoint (a copied folder), not training "
                           f"state: there is nothing to restore; `%checkpoint use {label}` "
                           "(ckpt_notebook.materialize in Python) gives its files")


def refuse_no_match(name: str, module: Any, missing: Sequence[str], unexpected: Sequence[str],
                    *, source: str) -> None:
    """A non-strict load that matches none of a module's keys would load nothing at all."""
    expected = len(module.state_dict())
    if expected and len(missing) == expected:
        saved = f", {source} has {unexpected[0]!r}" if unexpected else ""
        raise RestoreError(f"{source} matched no key of {name!r} (it expects {missing[0]!r}"
                           f"{saved}): nothing was loaded; build the model as it was saved")
