"""State trees <-> JSON plus a table of arrays.

A state dict becomes a JSON tree in which every tensor or numpy array is replaced by
``{"__tensor__": i}`` / ``{"__ndarray__": i}`` (an index into the object's tensor table).
Other JSON-foreign values use one-key tags: ``__tuple__``, ``__dict__`` (non-string keys),
``__float__`` (nan/inf), ``__bytes__``, ``__set__``, ``__npscalar__``, ``__torch__``
(dtype/device), ``__pickle__``. A user dict that happens to look like a tag is stored as
``__dict__``, so decoding is never ambiguous.

Arrays are copied when captured (the snapshot must not see later in-place updates); nothing
is pickled unless the caller allowed it for that object.
"""

from __future__ import annotations

import base64
import math
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CaptureError, PickleRequiredError, RestoreError
from ..types import ArrayKind, TensorData

__all__ = ["Decoder", "Encoder", "PickleEntry", "TensorEntry"]

TAGS = frozenset({"__tensor__", "__ndarray__", "__tuple__", "__dict__", "__float__",
                  "__bytes__", "__set__", "__npscalar__", "__torch__", "__pickle__"})
ALLOW_PICKLE = "allow_pickle=True"  # the keyword a refusal to pickle names (its ``keyword``)


@dataclass
class TensorEntry:
    path: str
    data: TensorData
    array: ArrayKind
    device: str = "cpu"
    # (data pointer, version counter) of a torch tensor when captured: equal stamps in two
    # saves mean the tensor *probably* did not change. Only an ordering hint for the store,
    # never a reason to skip hashing: writes through ``.data`` or numpy views bypass it.
    stamp: tuple[int, int] | None = None
    # whether ``data`` is a snapshot-pool buffer (None: not one), and True when that buffer
    # already held exactly these bytes, so it was not rewritten (see snapshot_tensor)
    reused: bool | None = None
    # a tensor read in place: its pool copy, to compare and refresh (capture.torch.Mirror)
    mirror: Any = None


@dataclass
class PickleEntry:
    path: str
    data: bytes


def _torch() -> Any:
    return sys.modules.get("torch")


def _numpy() -> Any:
    return sys.modules.get("numpy")


def is_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def is_ndarray(value: Any) -> bool:
    np = _numpy()
    return np is not None and isinstance(value, np.ndarray)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


@dataclass
class Encoder:
    """Encode one object's state; ``name`` is used in error messages."""

    name: str
    allow_pickle: bool = False
    pool: Any = None
    copy: bool = True  # False: CPU arrays are read in place (the caller waits for the write)
    mirror: bool = False  # with copy=False: pair large CPU tensors with a pool copy
    tensors: list[TensorEntry] = field(default_factory=list)
    pickles: list[PickleEntry] = field(default_factory=list)
    waits: list[Callable[[], None]] = field(default_factory=list)

    def encode(self, value: Any, path: str = "") -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {"__float__": repr(float(value))}
        if isinstance(value, list):
            return [self.encode(v, _join(path, i)) for i, v in enumerate(value)]
        if isinstance(value, tuple) and not hasattr(value, "_fields"):
            return {"__tuple__": [self.encode(v, _join(path, i)) for i, v in enumerate(value)]}
        if isinstance(value, dict):
            return self._encode_dict(value, path)
        return self._encode_other(value, path)

    def _encode_dict(self, value: dict[Any, Any], path: str) -> Any:
        if all(isinstance(k, str) for k in value) and not (len(value) == 1 and set(value) & TAGS):
            return {k: self.encode(v, _join(path, k)) for k, v in value.items()}
        return {"__dict__": [[self.encode(k, path), self.encode(v, _join(path, k))]
                             for k, v in value.items()]}

    def _encode_other(self, value: Any, path: str) -> Any:
        if is_tensor(value):
            from . import torch as torch_capture

            snap = torch_capture.snapshot_tensor(value, where=self._where(path), pool=self.pool,
                                                 copy=self.copy, mirror=self.mirror)
            if snap.wait is not None:
                self.waits.append(snap.wait)
            self.tensors.append(TensorEntry(path, snap.data, "torch", snap.device,
                                            stamp=(value.data_ptr(), value._version),
                                            reused=snap.reused, mirror=snap.mirror))
            return {"__tensor__": len(self.tensors) - 1}
        if is_ndarray(value):
            from .arrays import ndarray_to_data

            data = ndarray_to_data(value, self._where(path), copy=self.copy)
            self.tensors.append(TensorEntry(path, data, "numpy"))
            return {"__ndarray__": len(self.tensors) - 1}
        if isinstance(value, (bytes, bytearray)):
            return {"__bytes__": base64.b64encode(bytes(value)).decode()}
        if isinstance(value, (set, frozenset)):
            return {"__set__": [self.encode(v, path) for v in value]}
        tagged = _encode_scalar(value)
        if tagged is not None:
            return tagged
        return self._encode_pickle(value, path)

    def _encode_pickle(self, value: Any, path: str) -> Any:
        what = f"{type(value).__module__}.{type(value).__qualname__}"
        if not self.allow_pickle:
            raise PickleRequiredError(
                f"cannot save {self._where(path)}: a {what} can only be saved with pickle; "
                f"pass allow_pickle=True for {self.name!r} if you trust whoever restores it, "
                "or save a plain value instead", keyword=ALLOW_PICKLE
            )
        try:
            data = pickle.dumps(value, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            raise CaptureError(f"cannot save {self._where(path)}: a {what} cannot be pickled "
                               f"({err}); save a plain value or give it state_dict()") from err
        self.pickles.append(PickleEntry(path, data))
        return {"__pickle__": len(self.pickles) - 1}

    def _where(self, path: str) -> str:
        return f"{self.name}" + (f"[{path}]" if path else "")


def _encode_scalar(value: Any) -> Any:
    np = _numpy()
    if np is not None and isinstance(value, np.generic):
        return {"__npscalar__": [str(value.dtype), value.item()]}
    torch = _torch()
    if torch is not None:
        if isinstance(value, torch.dtype):
            return {"__torch__": ["dtype", str(value).removeprefix("torch.")]}
        if isinstance(value, torch.device):
            return {"__torch__": ["device", str(value)]}
    return None


class Decoder:
    """Decode a tree; ``arrays[i]`` is the already-built tensor or ndarray for index ``i``."""

    def __init__(self, arrays: Sequence[Any], pickles: Sequence[bytes | None] = ()) -> None:
        self.arrays = arrays
        self.pickles = pickles

    def decode(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (tag, arg), = node.items()
            if tag in TAGS:
                return self._decode_tag(tag, arg)
        return {k: self.decode(v) for k, v in node.items()}

    def _decode_tag(self, tag: str, arg: Any) -> Any:
        if tag in ("__tensor__", "__ndarray__"):
            return self.arrays[_index(arg, len(self.arrays), tag)]
        if tag == "__tuple__":
            return tuple(self.decode(v) for v in arg)
        if tag == "__dict__":
            return {_hashable(self.decode(k)): self.decode(v) for k, v in arg}
        if tag == "__float__":
            return float(arg)
        if tag == "__bytes__":
            return base64.b64decode(arg)
        if tag == "__set__":
            return {_hashable(self.decode(v)) for v in arg}
        if tag == "__npscalar__":
            import numpy as np

            return np.dtype(arg[0]).type(arg[1])
        if tag == "__torch__":
            return _torch_value(*arg)
        if not self.pickles:
            raise RestoreError("the saved state holds a pickled value, which was not loaded",
                               hint="pass allow_pickle=True only if you trust whoever wrote it",
                               keyword=ALLOW_PICKLE)
        data = self.pickles[_index(arg, len(self.pickles), tag)]
        if data is None:
            raise RestoreError("a pickled value was not loaded", hint="pass allow_pickle=True",
                               keyword=ALLOW_PICKLE)
        return pickle.loads(data)  # noqa: S301 - only reached with allow_pickle=True


def _torch_value(kind: str, text: str) -> Any:
    import torch

    if kind != "dtype":
        return torch.device(text)
    dtype = getattr(torch, str(text), None)
    if not isinstance(dtype, torch.dtype):  # getattr on a module must yield a dtype, nothing else
        raise RestoreError(f"saved state names {text!r} as a torch dtype; it is not one")
    return dtype


def _index(arg: Any, n: int, tag: str) -> int:
    if not isinstance(arg, int) or isinstance(arg, bool) or not 0 <= arg < n:
        raise RestoreError(f"saved state refers to {tag} {arg!r}, but only {n} are saved; "
                           "the checkpoint is damaged")
    return arg


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value
