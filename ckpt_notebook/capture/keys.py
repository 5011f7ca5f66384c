"""Which of a module's keys each saved state-dict key is: wrapper prefixes and ``key_map``.

``DataParallel`` and ``DistributedDataParallel`` keep their model's keys under ``module.``,
``torch.compile``'s ``OptimizedModule`` under ``_orig_mod.``, and nested wrappers stack them
(``module._orig_mod.``). Each side's wrapper prefix is read off its own keys (the wrapper
prefixes that every key starts with); the saved side's is stripped and the target's added,
and that mapping is used only when more keys agree with it than without it: nothing is
guessed key by key. ``key_map`` renames saved keys before that: an entry whose old name is
a prefix (ends in ``.``, or is empty) renames every key it starts, any other one key exactly.
Pure functions over key names: nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError, RestoreError

__all__ = ["WRAPPERS", "KeyMap", "check_key_map", "key_mapping", "rename_problem",
           "wrapper_prefix"]

WRAPPERS = ("module.", "_orig_mod.")
"""The prefixes DataParallel / DDP and ``torch.compile`` put before their model's keys."""

SPELLING = ('as {"backbone.": "encoder."} (a prefix, ending in ".", renames every key it '
            'starts) or {"head.weight": "fc.weight"} (one key)')


def wrapper_prefix(keys: Iterable[str]) -> str:
    """The chain of :data:`WRAPPERS` that every key starts with (``""`` when none)."""
    keys = list(keys)
    prefix = ""
    while keys:
        step = next((w for w in WRAPPERS if all(
            k.startswith(prefix + w) and len(k) > len(prefix + w) for k in keys)), None)
        if step is None:
            break
        prefix += step
    return prefix


def rename_problem(old: str, new: str) -> str | None:
    """What is wrong with one ``key_map`` entry, or None."""
    if old == "" or old.endswith("."):
        if new and not new.endswith("."):
            return f"{old!r} is a prefix (it ends in '.'), so its new name must be one too"
    elif not new or new.endswith("."):
        return f"{old!r} is one key, so its new name must be a key (not empty, no final '.')"
    return None


def check_key_map(key_map: Any) -> dict[str, str]:
    """``key_map`` as given to a restore, checked: a mapping of str to str."""
    if not isinstance(key_map, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in key_map.items()):
        raise InvalidArgumentError(f"key_map must map saved key names to new ones, {SPELLING}; "
                                   f"got {key_map!r}"[:300])
    for old, new in key_map.items():
        problem = rename_problem(old, new)
        if problem:
            raise InvalidArgumentError(f"key_map: {problem}; spell it {SPELLING}")
    return dict(key_map)


@dataclass(frozen=True)
class KeyMap:
    """Saved key -> the module's key, for one object; ``how`` says what was applied."""

    keys: Mapping[str, str]
    how: str

    def apply(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return {self.keys.get(k, k): v for k, v in state.items()}


def _rename(key: str, key_map: Mapping[str, str]) -> tuple[str, str | None]:
    """(new key, the entry that renamed it)."""
    if key in key_map and not (key == "" or key.endswith(".")):
        return key_map[key], key
    best = max((old for old in key_map if (old == "" or old.endswith("."))
                and key.startswith(old)), key=len, default=None)
    return (key, None) if best is None else (key_map[best] + key[len(best):], best)


def key_mapping(name: str, saved: Iterable[str], target: Iterable[str],
                key_map: Mapping[str, str] | None = None) -> tuple[KeyMap | None, set[str]]:
    """How the saved keys of object ``name`` map onto ``target``'s, and the ``key_map``
    entries that applied. None when the keys are used as saved."""
    own = set(target)
    renamed: dict[str, str] = {}
    used: set[str] = set()
    for key in saved:
        renamed[key], entry = _rename(key, key_map or {})
        if entry is not None:
            used.add(entry)
    how = [f"{old or '(none)'} -> {(key_map or {})[old] or '(none)'}" for old in sorted(used)]
    strip, add = wrapper_prefix(renamed.values()), wrapper_prefix(own)
    if strip != add:
        wrapped = {k: add + v[len(strip):] for k, v in renamed.items()}
        if len(own.intersection(wrapped.values())) > len(own.intersection(renamed.values())):
            renamed = wrapped
            how.append(f"{strip or '(none)'} -> {add or '(none)'}")
    if not how:
        return None, used
    seen: dict[str, str] = {}
    for old, new in renamed.items():
        if new in seen:
            raise RestoreError(f"cannot restore {name!r}: its saved keys {seen[new]!r} and "
                               f"{old!r} would both become {new!r} ({', '.join(how)}); "
                               "rename them apart with key_map", keyword="key_map")
        seen[new] = old
    return KeyMap(renamed, ", ".join(how)), used
