"""numpy arrays <-> framework-free :class:`TensorData` (imports numpy only when called)."""

from __future__ import annotations

from typing import Any

from ..errors import CaptureError
from ..types import TensorData

__all__ = ["data_to_ndarray", "ndarray_to_data"]

_NP_TO_ST = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
    "float16": "F16", "int32": "I32", "uint32": "U32", "float32": "F32",
    "int64": "I64", "uint64": "U64", "float64": "F64",
}
_ST_TO_NP = {v: k for k, v in _NP_TO_ST.items()}


def ndarray_to_data(array: Any, where: str, *, copy: bool = True) -> TensorData:
    """``array`` as C-contiguous bytes: a copy (a snapshot must not change later), or with
    ``copy=False`` the array's own memory when it is already contiguous."""
    import numpy as np

    code = _NP_TO_ST.get(array.dtype.name)
    if code is None or array.dtype.byteorder == ">":
        raise CaptureError(f"cannot save {where}: numpy dtype {array.dtype} is not supported "
                           f"(use one of {', '.join(_NP_TO_ST)})")
    host = np.array(array, order="C", copy=True) if copy else np.ascontiguousarray(array)
    raw: Any = host.reshape(-1).view(np.uint8)
    return TensorData(code, tuple(host.shape), memoryview(raw))


def data_to_ndarray(data: TensorData) -> Any:
    import numpy as np

    return np.frombuffer(data.data, dtype=_ST_TO_NP[data.dtype]).reshape(data.shape).copy()
