"""Errors as the REST API answers them: an HTTP status and ``{"code", "message"}``.

``message`` is the one line ``ckpt`` prints after ``ckpt: error:`` for the same error, so the
JupyterLab extension shows the words a terminal user would see.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    FormatError,
    HubError,
    IntegrityError,
    InvalidNameError,
    ProtectedCheckpointError,
    SourceError,
    StoreBusyError,
    StoreError,
    UnsafeFileError,
    UnsafePathError,
)
from .paths import ForbiddenPathError

__all__ = ["Failure", "failure"]

# Most specific first: StoreBusyError is a StoreError, ForbiddenPathError an OSError, a
# SourceNotFoundError a CheckpointNotFoundError; source and Hub errors are OSErrors that are
# the request's to fix, not the store's.
_CODES: tuple[tuple[type[BaseException], int, str], ...] = (
    (ForbiddenPathError, 403, "forbidden_path"),
    (InvalidNameError, 400, "invalid_name"),
    (CheckpointNotFoundError, 404, "not_found"),
    (CheckpointExistsError, 409, "exists"),
    (ProtectedCheckpointError, 409, "needs_force"),
    (StoreBusyError, 409, "busy"),
    (UnsafeFileError, 422, "unsafe_source"),
    (IntegrityError, 422, "integrity"),
    (FormatError, 422, "integrity"),
    (UnsafePathError, 422, "integrity"),
    (SourceError, 400, "bad_request"),
    (HubError, 400, "bad_request"),
    (StoreError, 502, "store_error"),
    (ValueError, 400, "bad_request"),
    (OSError, 502, "store_error"),
)


@dataclass(frozen=True)
class Failure:
    status: int
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def one_line(text: str) -> str:
    return " ".join(text.splitlines())


def failure(err: BaseException) -> Failure:
    """How ``err`` is answered. Other ``CkptError``s are 400 ``bad_request``; anything else
    is a bug: 500 ``internal``, still one line naming the type, as the CLI prints it."""
    from ..errors import CkptError

    for kind, status, code in _CODES:
        if isinstance(err, kind):
            return Failure(status, code, one_line(str(err) or type(err).__name__))
    if isinstance(err, CkptError):
        return Failure(400, "bad_request", one_line(str(err)))
    return Failure(500, "internal", one_line(f"unexpected {type(err).__name__}: {err}"))
