"""Snapshot one object into a tree + arrays, and load a decoded state back into it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CaptureError, RestoreError
from ..types import ObjectKind
from .stateful import classify, generator_family, type_name
from .tree import Encoder, PickleEntry, TensorEntry

__all__ = ["ObjectSnapshot", "check_fits", "load_into", "snapshot", "snapshot_rng"]

RNG_NAME = "rng"


@dataclass
class ObjectSnapshot:
    """One object's state, copied to host memory: a JSON tree plus its arrays."""

    name: str
    kind: ObjectKind
    type: str
    tree: Any
    tensors: list[TensorEntry] = field(default_factory=list)
    pickles: list[PickleEntry] = field(default_factory=list)
    waits: list[Callable[[], None]] = field(default_factory=list)

    def wait(self) -> None:
        """Block until asynchronous device-to-host copies of this snapshot are done."""
        for wait in self.waits:
            wait()
        self.waits.clear()

    @property
    def nbytes(self) -> int:
        return sum(t.data.nbytes for t in self.tensors) + sum(len(p.data) for p in self.pickles)


def _state_of(obj: Any, kind: str) -> Any:
    if kind == "generator":
        family = generator_family(obj)
        if family == "numpy":
            return obj.bit_generator.state
        if family == "python":
            return obj.getstate()
        return obj.get_state()
    if kind == "value":
        return obj
    return obj.state_dict()


def snapshot(name: str, obj: Any, *, allow_pickle: bool = False,
             pool: Any = None, copy: bool = True, mirror: bool = False) -> ObjectSnapshot:
    """Copy ``obj``'s state now; later in-place changes to ``obj`` do not reach the snapshot.

    ``copy=False`` reads CPU arrays in place: only for a caller that waits for the write;
    ``mirror=True`` then pairs large CPU tensors with a pool copy (``TensorEntry.mirror``)."""
    kind = classify(obj)
    if kind == "value" and callable(obj) and not allow_pickle:
        raise CaptureError(
            f"cannot save {name!r}: a {type_name(obj)} is neither Stateful (state_dict / "
            "load_state_dict) nor a plain value; give it those two methods, or pass "
            f"allow_pickle=True for {name!r}", keyword="allow_pickle=True"
        )
    enc = Encoder(name, allow_pickle=allow_pickle, pool=pool, copy=copy, mirror=mirror)
    tree = enc.encode(_state_of(obj, kind))
    return ObjectSnapshot(name, kind, type_name(obj), tree, enc.tensors, enc.pickles, enc.waits)


def snapshot_rng(pool: Any = None, copy: bool = True) -> ObjectSnapshot:
    from .torch import capture_rng

    enc = Encoder(RNG_NAME, pool=pool, copy=copy)
    tree = enc.encode(capture_rng())
    return ObjectSnapshot(RNG_NAME, "rng", "rng", tree, enc.tensors, enc.pickles, enc.waits)


def check_fits(name: str, kind: str, obj: Any, state: Any, *, strict: bool,
               saved_kind: str) -> tuple[list[str], list[str]]:
    """Raise :class:`RestoreError` if ``state`` cannot be loaded into ``obj``; changes nothing.

    Returns the (missing, unexpected) keys that a non-strict load will skip.
    """
    if kind != saved_kind and not (kind == "stateful" or saved_kind == "stateful"):
        raise RestoreError(f"cannot restore {name!r}: the checkpoint holds a {saved_kind} "
                           f"but {name!r} is now a {kind}; rebind {name!r} or restore "
                           "without it")
    if kind == "module":
        from .torch import check_module_state

        return check_module_state(obj, state, name=name, strict=strict)
    if kind == "optimizer":
        _check_optimizer(name, obj, state)
    return [], []


def _check_optimizer(name: str, opt: Any, state: Any) -> None:
    groups, saved = opt.param_groups, state.get("param_groups", [])
    if len(groups) != len(saved) or any(
            len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved, strict=False)):
        raise RestoreError(
            f"cannot restore {name!r}: the checkpoint's optimizer has "
            f"{[len(s['params']) for s in saved]} parameters per group but this one has "
            f"{[len(g['params']) for g in groups]}; build it over the same parameters"
        )
    index = {i: p for s, g in zip(saved, groups, strict=True)
             for i, p in zip(s["params"], g["params"], strict=True)}
    for key, per_param in state.get("state", {}).items():
        param = index.get(key)
        if param is None:
            continue
        for slot, value in per_param.items():
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape) > 0 and tuple(shape) != tuple(param.shape):
                raise RestoreError(
                    f"cannot restore {name!r}: state {key}.{slot} has shape {tuple(shape)} "
                    f"but its parameter has {tuple(param.shape)}; nothing was changed"
                )


def load_into(name: str, kind: str, obj: Any, state: Any, *, strict: bool) -> None:
    """Load a decoded state into ``obj`` in place (after :func:`check_fits` passed)."""
    try:
        if kind == "module":
            from .torch import load_module

            load_module(obj, state, strict=strict)
        elif kind == "generator":
            family = generator_family(obj)
            if family == "numpy":
                obj.bit_generator.state = state
            elif family == "python":
                obj.setstate(state)
            else:
                obj.set_state(state)
        else:
            obj.load_state_dict(state)
    except RestoreError:
        raise
    except Exception as err:
        raise RestoreError(f"cannot restore {name!r}: {type(err).__name__}: {err}") from err


def fingerprint(obj: Any) -> Any:
    """A cheap value that changes when ``obj``'s state changes (no tensor data is read).

    Tensors count in-place updates in ``_version``; optimizers and schedulers also move
    their step counters. Plain values fall back to ``repr``.
    """
    kind = classify(obj)
    if kind == "module":
        return tuple(t._version for t in (*obj.parameters(), *obj.buffers()))
    if kind == "optimizer":
        return tuple(getattr(t, "_version", t) for s in obj.state.values() for t in s.values())
    if kind == "scheduler":
        return getattr(obj, "last_epoch", None), getattr(obj, "_step_count", None)
    if kind in ("scaler", "stateful", "generator"):
        return id(obj), repr(_state_of(obj, kind))[:10_000]
    return repr(obj)[:10_000]
