"""Every error ckpt_notebook raises, in one place.

Each error subclasses :class:`CkptError` *and* the builtin a caller would naturally catch,
so ``except FileExistsError`` or ``except LookupError`` keep working. Messages are one line:
what was wrong, where, and how to fix it. Backend errors are translated at the boundary with
``raise ... from err`` so the original stays in ``__cause__``.

    CkptError
    ├── StoreError (OSError)                  the store URL or its backend failed
    │   ├── StoreBusyError                    another process holds the store (gc vs. save)
    │   └── StoreNotFoundError (FileNotFoundError)  nothing is at the URL: no store there
    ├── CheckpointNotFoundError (LookupError) a REF that names no checkpoint
    ├── CheckpointExistsError (FileExistsError)  a write-once name is taken
    ├── NeedsForceError (PermissionError)     deleting a named or pinned checkpoint, no force
    ├── IntegrityError (ValueError)           a blob does not match its hash
    ├── FormatError (ValueError)              a manifest this version cannot read
    ├── CaptureError (TypeError)              an object or value that cannot be saved
    │   └── PickleRequiredError               a value that only pickle could save
    ├── RestoreError (ValueError)             state that does not fit the target objects
    ├── UnsafeFileError (ValueError)          a file that would need unpickling to load
    ├── UnsafePathError (ValueError)          a path read from a store that would lead outside
    ├── InvalidNameError (ValueError)         a checkpoint name breaking the naming rule
    └── BackgroundSaveError (RuntimeError)    an async save failed; raised at the next call
"""

from __future__ import annotations

__all__ = [
    "BackgroundSaveError",
    "CaptureError",
    "CheckpointExistsError",
    "CheckpointNotFoundError",
    "CkptError",
    "FormatError",
    "IntegrityError",
    "InvalidNameError",
    "NeedsForceError",
    "PickleRequiredError",
    "RestoreError",
    "StoreBusyError",
    "StoreError",
    "StoreNotFoundError",
    "UnsafeFileError",
    "UnsafePathError",
]


class CkptError(Exception):
    """Base class of every ckpt_notebook error."""

    def __str__(self) -> str:  # LookupError/KeyError would repr() the message; keep it plain.
        return str(self.args[0]) if self.args else self.__class__.__name__


class StoreError(CkptError, OSError):
    """The store could not be opened, read or written."""


class StoreBusyError(StoreError):
    """Another process holds the store in a way that conflicts with this operation."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """Nothing is at a store URL that must name an existing store (a mistyped path)."""


class CheckpointNotFoundError(CkptError, LookupError):
    """A REF (id, name, ``latest``, ``best.<metric>``) that names no checkpoint."""


class CheckpointExistsError(CkptError, FileExistsError):
    """A write-once checkpoint name is already taken."""


class NeedsForceError(CkptError, PermissionError):
    """Deleting a named or pinned checkpoint without ``force``: names are meant to stay."""


class IntegrityError(CkptError, ValueError):
    """Stored bytes do not match their content hash (or a blob is missing)."""


class FormatError(CkptError, ValueError):
    """A manifest or file whose format this version cannot read."""


class CaptureError(CkptError, TypeError):
    """An object or value that ckpt_notebook does not know how to save."""


class PickleRequiredError(CaptureError):
    """A value that only pickle could save, and pickle was not allowed for it."""


class RestoreError(CkptError, ValueError):
    """Saved state that does not fit the objects it would be loaded into."""


class UnsafeFileError(CkptError, ValueError):
    """A file that could only be loaded by unpickling arbitrary objects."""


class UnsafePathError(CkptError, ValueError):
    """A path built from data read out of a store (or an archive) that would lead outside
    the folder it belongs to: the data is damaged or crafted, and nothing is written."""


class InvalidNameError(CkptError, ValueError):
    """A checkpoint name that breaks the naming rule."""


class BackgroundSaveError(CkptError, RuntimeError):
    """An asynchronous save failed in the background; raised at the next call."""
