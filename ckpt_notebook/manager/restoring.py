"""The restore pipeline behind :meth:`Checkpointer.restore`: all of it or none.

A restore plans what to load, reads and verifies the saved state (large module tensors are
read straight into the model, see storage/inplace.py), checks that every object fits, and only
then loads: the non-modules first (a failure rolls them back), then the pre-checked modules.
A plain ``.safetensors`` / ``.pt`` state dict restores into the tracked modules. Saved
module keys are renamed onto the module's first (wrapper prefixes, ``key_map``: see
capture/keys.py), and a module that matched none of them is refused, strict or not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import capture
from ..capture.keys import KeyMap, check_key_map, key_mapping
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
    "map_keys",
    "refuse_files",
    "refuse_no_match",
    "restore_state",
    "restore_weights_file",
    "verify_blobs",
]


def restore_state(store: Store, info: CheckpointInfo, objects: MutableMapping[str, Any], *,
                  rng: bool, weights_only: bool, strict: bool, allow_pickle: bool,
                  key_map: Mapping[str, str] | None = None) -> RestoreReport:
    """Load checkpoint ``info`` into ``objects`` (plain values are re-bound in it)."""
    refuse_files(info)
    saved = store.manifest(info.id).objects
    plan = restore_plan(saved, objects, rng=rng, weights_only=weights_only)
    refuse_pickles(info.id, saved, plan, allow_pickle)
    maps = map_keys({n: _saved_keys(saved[n]) for n in plan if saved[n].kind == "module"},
                    objects, key_map)
    direct = direct_reads(info.id, saved, plan, objects, maps)
    states = read_states(store, info.id, saved, plan,
                         placeholders={n: set(d.paths) for n, d in direct.items()},
                         allow_pickle=allow_pickle)
    for name, keymap in maps.items():
        states[name] = keymap.apply(states[name])
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
    return RestoreReport(info, reports, values, rng_restored, rng_note, unused,
                         mapped={n: m.how for n, m in maps.items()})


def map_keys(saved_keys: Mapping[str, Sequence[str]], objects: Mapping[str, Any],
             key_map: Mapping[str, str] | None) -> dict[str, KeyMap]:
    """Per module in ``saved_keys`` (object -> its saved keys): how its keys are renamed
    onto the module's, where they are. A ``key_map`` entry that renamed nothing is refused:
    an option that did nothing must not look as if it had."""
    key_map = None if key_map is None else check_key_map(key_map)
    out: dict[str, KeyMap] = {}
    used: set[str] = set()
    for name, keys in saved_keys.items():
        obj = objects.get(name)
        if obj is None or capture.classify(obj) != "module":
            continue
        keymap, applied = key_mapping(name, keys, obj.state_dict().keys(), key_map)
        used |= applied
        if keymap is not None:
            out[name] = keymap
    unused = [old for old in key_map or () if old not in used]
    if unused:
        first = next(iter(next(iter(saved_keys.values()), [])), None)
        like = f" (saved keys look like {first!r})" if first else ""
        raise RestoreError(f"key_map entry {unused[0]!r} matched no saved key of "
                           f"{', '.join(map(repr, saved_keys)) or 'any module'}{like}; "
                           "nothing was loaded", keyword="key_map")
    return out


def _saved_keys(obj: SavedObject) -> list[str]:
    """A saved module's state-dict keys, from its manifest entry."""
    return [k for k in obj.state if isinstance(k, str)] if isinstance(obj.state, dict) else []


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
        if kind == "module" == saved[name].kind:
            refuse_no_match(name, obj, state, source="the checkpoint")
        missing, unexpected = capture.check_fits(name, kind, obj, state, strict=strict,
                                                 saved_kind=saved[name].kind)
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
            state = {k: v for k, v in state.items() if k not in direct[name].keys}
        capture.load_into(name, "module", objects[name], state,
                          strict=strict and name not in direct)


def restore_weights_file(store: Store, ref: str, objects: Mapping[str, Any], *,
                         strict: bool, key_map: Mapping[str, str] | None = None
                         ) -> RestoreReport:
    """Load a plain ``.safetensors`` / ``.pt`` state dict (path or URL) into the modules."""
    from ..capture.torch import load_weights_file

    raw = read_url_bytes(ref, store)
    tensors = load_weights_file(raw, where=ref)
    modules = {n: o for n, o in objects.items() if capture.classify(o) == "module"}
    targets = split_for_modules(tensors, modules, where=ref)
    maps = map_keys({n: list(s) for n, s in targets.items()}, modules, key_map)
    for name, keymap in maps.items():
        targets[name] = keymap.apply(targets[name])
    reports = []
    for name, state in targets.items():
        refuse_no_match(name, modules[name], state, source=ref)
        missing, unexpected = capture.check_fits(name, "module", modules[name], state,
                                                 strict=strict, saved_kind="module")
        reports.append(ObjectReport(name, "restored", "module", missing, unexpected))
    for name, state in targets.items():
        capture.load_into(name, "module", modules[name], state, strict=strict)
    info = CheckpointInfo(id=os.path.basename(ref), kind="state", objects=tuple(targets))
    return RestoreReport(info, reports, rng_note="weights file: no RNG state",
                         mapped={n: m.how for n, m in maps.items()})


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
    """One module's large tensors to read in place: (manifest entry, the module's key for
    it, destination) triples."""

    where: str
    entries: list[tuple[TensorRecord, str, Any]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """The tensors' paths as saved."""
        return [t.path for t, _, _ in self.entries]

    @property
    def keys(self) -> list[str]:
        """The module's keys they are read into."""
        return [key for _, key, _ in self.entries]

    @property
    def blobs(self) -> list[tuple[str, int, str]]:
        return [(t.blob, t.blob_size, f"{self.where}: tensor {t.path}")
                for t, _, _ in self.entries]

    def read(self, store: Store) -> None:
        from ..capture.torch import writable_memory

        for t, _, target in self.entries:
            read_tensor_into(store.blobs, t.blob, t.key, writable_memory(target),
                             where=f"{self.where}: tensor {t.path}")


def direct_reads(ckpt_id: str, saved: Mapping[str, SavedObject], plan: Sequence[str],
                 objects: Mapping[str, Any],
                 maps: Mapping[str, KeyMap] | None = None) -> dict[str, DirectReads]:
    """Per module: tensors alone in their blob whose destination (the module's key for it,
    through ``maps``) is a contiguous CPU tensor of the same dtype and shape (others go
    through ``load_state_dict``)."""
    out: dict[str, DirectReads] = {}
    for name in plan:
        obj = objects.get(name)
        if saved[name].kind != "module" or obj is None or capture.classify(obj) != "module":
            continue
        from ..capture.torch import TORCH_TO_ST, direct_targets

        targets = direct_targets(obj)
        keys = maps[name].keys if maps and name in maps else {}
        reads = DirectReads(f"checkpoint {ckpt_id}: {name}")
        for t in saved[name].tensors:
            key = keys.get(t.path, t.path)
            target = targets.get(key)
            if (t.key == "t" and t.array == "torch" and target is not None
                    and TORCH_TO_ST.get(target.dtype) == t.dtype
                    and tuple(target.shape) == t.shape):
                reads.entries.append((t, key, target))
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


def refuse_no_match(name: str, module: Any, state: Mapping[str, Any], *, source: str) -> None:
    """A load that matches none of a module's keys would load nothing at all: refused, strict
    or not (strict's "missing keys" would point at strict=False, which loads nothing)."""
    own = list(module.state_dict())
    if own and not any(k in state for k in own):
        first = next(iter(state), None)
        saved = f", {source} has {first!r}" if first is not None else ""
        raise RestoreError(f"{source} matched no key of {name!r} (it expects {own[0]!r}"
                           f"{saved}): nothing was loaded; build the model as it was saved, "
                           "or rename the saved keys with key_map", keyword="key_map")
