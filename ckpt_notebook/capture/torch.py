"""Everything that needs torch: tensor snapshots, RNG, loading into modules, weight files.

This is the only capture module that imports torch, and it is imported only when a tensor or
a torch object is actually captured or restored.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch

from ..errors import CaptureError, RestoreError, UnsafeFileError
from ..types import DATA_ALIGN, DATA_PHASE, OWN_BLOB_MIN, TensorData

__all__ = [
    "BufferPool",
    "Mirror",
    "Snapshot",
    "capture_rng",
    "data_to_tensor",
    "load_weights_file",
    "restore_rng",
    "save_weights_file",
    "snapshot_tensor",
]

TORCH_TO_ST = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
    torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32",
    torch.int64: "I64", torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
    torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
}
ST_TO_TORCH = {v: k for k, v in TORCH_TO_ST.items()}


class BufferPool:
    """Host buffers reused from one save to the next (pinned when the source is on a GPU).

    Reuse saves the allocation and page faults of a fresh copy every save; the caller must
    not reuse a pool while a previous snapshot from it is still being written.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, tuple[int, ...], bool], torch.Tensor] = {}

    def take(self, key: str, like: torch.Tensor) -> torch.Tensor:
        pin = like.device.type == "cuda"
        slot = (key, like.dtype, tuple(like.shape), pin)
        buf = self._buffers.get(slot)
        if buf is None:
            buf = _empty_at_phase(like.shape, like.dtype, pin=pin)
            self._buffers[slot] = buf
        return buf

    def clear(self) -> None:
        self._buffers.clear()


def _empty_at_phase(shape: torch.Size, dtype: torch.dtype, *, pin: bool) -> torch.Tensor:
    """An uninitialised host tensor whose bytes begin :data:`DATA_PHASE` bytes into a
    :data:`DATA_ALIGN` block, as single-tensor blobs lay them out on disk: the store then
    writes it with direct I/O straight from this memory."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = math.prod(shape) * itemsize
    if nbytes < DATA_ALIGN:
        return torch.empty(shape, dtype=dtype, pin_memory=pin)
    raw = torch.empty(nbytes + DATA_ALIGN, dtype=torch.uint8, pin_memory=pin)
    shift = (DATA_PHASE - raw.data_ptr()) % DATA_ALIGN
    if shift % itemsize:  # never with torch's 64-byte-aligned allocations
        return torch.empty(shape, dtype=dtype, pin_memory=pin)
    return raw[shift:shift + nbytes].view(dtype).view(shape)


class Mirror:
    """A host copy of a live CPU tensor that a synchronous save reads in place.

    The next save compares the tensor with it (:meth:`matches`, about twice as fast as
    hashing) and, on a match, reuses the blob its bytes were stored as instead of hashing
    them again; after a save that found the tensor changed, :meth:`refresh` copies it in."""

    def __init__(self, live: torch.Tensor, copy: torch.Tensor) -> None:
        self.live = live
        self.copy = copy

    def matches(self) -> bool:
        return same_bytes(self.live, self.copy)

    def refresh(self) -> None:
        self.copy.copy_(self.live)


class Snapshot(NamedTuple):
    """What :func:`snapshot_tensor` took."""

    data: TensorData
    device: str
    wait: Callable[[], None] | None  # GPU copies finish asynchronously: wait before reading
    # whether ``data`` lives in a pool buffer (None: not one), and True when that buffer
    # already held exactly these bytes, so it was not rewritten
    reused: bool | None = None
    mirror: Mirror | None = None  # for a tensor read in place, its pool copy


def snapshot_tensor(t: torch.Tensor, *, where: str, pool: BufferPool | None = None,
                    copy: bool = True, mirror: bool = False) -> Snapshot:
    """Copy ``t`` to host memory now (into the pool's buffer for ``where``, if a pool is
    given). With ``copy=False`` a contiguous CPU tensor is read in place (for synchronous
    saves: the caller waits), and ``mirror=True`` pairs a large one with a pool buffer as
    its :class:`Mirror`.

    A CPU tensor whose bytes equal its pool buffer's is not copied again: comparing is
    cheaper than copying plus hashing, and it is exact (bytes, not float equality). A
    sample of elements is compared first, so a tensor that changed (every trained
    parameter) costs almost nothing extra."""
    if t.layout != torch.strided or t.is_quantized or t.is_nested:
        raise CaptureError(f"cannot save {where}: {t.layout} tensors are not supported; "
                           "convert it with .to_dense() first")
    code = TORCH_TO_ST.get(t.dtype)
    if code is None:
        raise CaptureError(f"cannot save {where}: dtype {t.dtype} is not supported")
    src = t.detach()
    device = str(src.device)
    wait: Callable[[], None] | None = None
    reused: bool | None = None
    kept: Mirror | None = None
    if not copy and src.device.type == "cpu":
        host = src.contiguous()
        if (mirror and pool is not None and host.data_ptr() == src.data_ptr()
                and host.nbytes >= OWN_BLOB_MIN):
            kept = Mirror(host, pool.take(where, host))
    elif pool is not None:
        host = pool.take(where, src)
        reused = src.device.type == "cpu" and same_bytes(src, host)
        if not reused:
            host.copy_(src, non_blocking=src.device.type == "cuda")
    elif src.device.type == "cpu":
        host = src.clone(memory_format=torch.contiguous_format)
    else:
        host = torch.empty(src.shape, dtype=src.dtype, pin_memory=src.device.type == "cuda")
        host.copy_(src, non_blocking=src.device.type == "cuda")
    if src.device.type == "cuda":
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(src.device))
        wait = event.synchronize
    raw: Any = host.reshape(-1).view(torch.uint8).numpy() if host.numel() else b""
    return Snapshot(TensorData(code, tuple(src.shape), memoryview(raw)), device, wait,
                    reused, kept)


_SAME_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_SAMPLE = 64  # elements compared before the whole tensor


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two contiguous CPU tensors of one dtype and shape hold identical bytes (NaN
    payloads and the sign of zero included: they are compared as integers, then with
    ``memcmp``)."""
    width = _SAME_WIDTH.get(a.element_size())
    if (width is None or a.dtype != b.dtype or a.shape != b.shape or a.numel() == 0
            or not a.is_contiguous() or not b.is_contiguous() or a.is_complex()
            or a.device.type != "cpu" or b.device.type != "cpu"):
        return False
    x, y = a.reshape(-1).view(width), b.reshape(-1).view(width)
    step = max(1, x.numel() // _SAMPLE)
    if not torch.equal(x[::step], y[::step]):
        return False
    if _MEMCMP is not None:
        return _MEMCMP(x.data_ptr(), y.data_ptr(), x.nbytes) == 0
    return torch.equal(x, y)


def _libc_memcmp() -> Callable[[int, int, int], int] | None:
    """libc's ``memcmp``: about 1.6x as fast as ``torch.equal`` on one core, and ctypes
    lets go of the GIL while it runs. None where it cannot be had."""
    import ctypes
    import os

    try:
        libc = ctypes.cdll.msvcrt if os.name == "nt" else ctypes.CDLL(None)
        fn = libc.memcmp
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return fn


_MEMCMP = _libc_memcmp()


def data_to_tensor(data: TensorData) -> torch.Tensor:
    """A CPU tensor over ``data`` (shares its memory when it is suitably aligned)."""
    dtype = ST_TO_TORCH[data.dtype]
    if data.nbytes == 0:
        return torch.empty(data.shape, dtype=dtype)
    buf: Any = bytearray(data.data) if data.data.readonly else data.data
    raw = torch.frombuffer(buf, dtype=torch.uint8)
    if raw.data_ptr() % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).reshape(data.shape)


# -- RNG ------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """The global RNG states: python ``random``, numpy, torch CPU and every CUDA device."""
    import random
    import sys

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np = sys.modules.get("numpy")
    if np is not None:
        state["numpy"] = np.random.get_state(legacy=False)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> str:
    """Set the global RNGs from ``state``; returns a note on anything not restored."""
    import random

    notes = []
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(state["torch"].to(torch.uint8))
    cuda = state.get("cuda")
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() >= len(cuda):
            torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda])
        else:
            notes.append(f"CUDA RNG of {len(cuda)} device(s) not restored: "
                         f"{torch.cuda.device_count()} CUDA device(s) here")
    return "; ".join(notes)


# -- modules --------------------------------------------------------------------------------
def check_module_state(module: torch.nn.Module, state: Mapping[str, Any], *, name: str,
                       strict: bool) -> tuple[list[str], list[str]]:
    """Check ``state`` fits ``module`` before anything is loaded: (missing, unexpected).

    With ``strict``, a shape mismatch or a missing or unexpected key fails; without it, they
    are skipped (a mismatched key is reported as unexpected, with both shapes).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    for key in mismatched_keys(own, state):
        saved, model = tuple(state[key].shape), tuple(own[key].shape)
        if strict:
            raise RestoreError(
                f"cannot restore {name}: {key} has shape {saved} in the checkpoint but {model} "
                "in the model; nothing was changed (rebuild the model as it was saved, or "
                "restore with strict=False to skip it)", keyword="strict=False"
            )
        unexpected.append(f"{key} (shape {saved}, model {model})")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise RestoreError(f"cannot restore {name}: {' and '.join(parts)}; nothing was changed "
                           "(restore with strict=False to load the keys that match)",
                           keyword="strict=False")
    return missing, unexpected


def mismatched_keys(own: Mapping[str, Any], state: Mapping[str, Any]) -> list[str]:
    return [k for k, v in state.items()
            if isinstance(own.get(k), torch.Tensor) and isinstance(v, torch.Tensor)
            and own[k].shape != v.shape]


def load_module(module: torch.nn.Module, state: Mapping[str, Any], *, strict: bool) -> None:
    """``load_state_dict``; without ``strict`` keys whose shapes differ are skipped too."""
    if not strict:
        skip = set(mismatched_keys(module.state_dict(), state))
        state = {k: v for k, v in state.items() if k not in skip}
    module.load_state_dict(state, strict=strict)


def direct_targets(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's tensors that a restore may fill in place, by state-dict key: contiguous
    CPU tensors of a module with no custom loading (hooks or ``_load_from_state_dict``).
    Empty when the module customizes loading: then ``load_state_dict`` does all of it."""
    base = torch.nn.Module
    if type(module).load_state_dict is not base.load_state_dict:
        return {}
    for m in module.modules():
        if (m._load_state_dict_pre_hooks or m._load_state_dict_post_hooks
                or type(m)._load_from_state_dict is not base._load_from_state_dict):
            return {}
    return {k: v for k, v in module.state_dict().items()
            if isinstance(v, torch.Tensor) and v.device.type == "cpu" and v.is_contiguous()
            and v.numel() > 0}


def writable_memory(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, writable in place."""
    raw: Any = t.reshape(-1).view(torch.uint8).numpy()
    return memoryview(raw)


def placeholder(dtype_code: str, shape: list[int]) -> torch.Tensor:
    """A data-less stand-in (shape and dtype only) for checks before loading."""
    return torch.empty(shape, dtype=ST_TO_TORCH[dtype_code], device="meta")


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


# -- plain weight files ---------------------------------------------------------------------
def load_weights_file(raw: bytes, *, where: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` or ``.pt`` state dict, never unpickling anything but tensors."""
    if where.endswith(".safetensors"):
        from safetensors.torch import load

        try:
            return dict(load(raw))
        except Exception as err:
            raise UnsafeFileError(f"{where}: not a readable safetensors file ({err})") from err
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeFileError(
            f"refusing to load {where}: it is not a plain tensor state dict and would need "
            f"unpickling arbitrary objects ({first[:160]}); convert it to .safetensors "
            "where it was made"
        ) from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UnsafeFileError(f"{where}: expected a dict of tensors (a state dict)")
    return obj


def save_weights_file(tensors: Mapping[str, torch.Tensor], out: Any,
                      *, fmt: str) -> None:
    """Write plain weights that plain torch loads: safetensors, or ``torch.save`` of a dict."""
    if fmt == "safetensors":
        from safetensors.torch import save

        out.write(save({k: v.contiguous() for k, v in tensors.items()}))
    else:
        torch.save(dict(tensors), out)
