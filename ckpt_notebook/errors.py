"""Every error ckpt_notebook raises, in one place.

Each error subclasses :class:`CkptError` *and* the builtin a caller would naturally catch,
so ``except FileExistsError`` or ``except LookupError`` keep working. Messages are one line:
what was wrong, where, and how to fix it. Backend errors are translated at the boundary with
``raise ... from err`` so the original stays in ``__cause__``.

    CkptError
    ├── StoreError (OSError)                  the store URL or its backend failed
    │   ├── StoreBusyError                    another process holds the store (gc vs. save)
    │   ├── StoreNotFoundError (FileNotFoundError)  nothing is at the URL: no store there
    │   └── StorePermissionError (PermissionError)  a store folder that may not be used so
    ├── SourceError (OSError)                 a copy source that cannot be read or copied
    │   ├── SourceNotFoundError (FileNotFoundError, CheckpointNotFoundError)  nothing there
    │   └── UnsupportedSourceError            what no copy reads (encrypted, LFS pointer, ...)
    ├── HubError (OSError)                    the Hugging Face Hub refused or failed an upload
    │   ├── HubNotFoundError (FileNotFoundError)  no such repo or branch (or not visible)
    │   └── HubAuthError (PermissionError)    the token was refused or may not write
    ├── CheckpointNotFoundError (LookupError) a REF that names no checkpoint
    ├── CheckpointExistsError (FileExistsError)  a write-once name is taken
    ├── ProtectedCheckpointError (PermissionError)  deleting a named, pinned or in-use
    │                                         checkpoint without force (was NeedsForceError)
    ├── InvalidArgumentError (ValueError)     a bad argument: a duration, count, URL, option
    │   └── InvalidNameError                  a checkpoint name breaking the naming rule
    ├── IntegrityError (ValueError)           a blob does not match its hash
    ├── FormatError (ValueError)              a manifest this version cannot read
    ├── CaptureError (TypeError)              an object or value that cannot be saved
    │   └── PickleRequiredError               a value that only pickle could save
    ├── RestoreError (ValueError)             state that does not fit the target objects
    ├── UnsafeFileError (ValueError)          a file that would need unpickling to load
    ├── UnsafePathError (ValueError)          a path read from a store that would lead outside
    └── BackgroundSaveError (RuntimeError)    an async save failed; raised at the next call

Every error may carry the facts it is about, as keyword-only attributes that default to
None: ``ref`` (the REF as given), ``url`` (a store, source or Hub URL), ``path`` (a file or
folder), ``hint`` (the fix, in the words of the Python API) and ``keyword`` (the keyword
argument the message tells the caller to pass, as it is written there: ``force=True``; a
command line that has an option for it says the option instead). ``str(err)`` is the
one-line message: :attr:`CkptError.message` (what was wrong), then ``"; "`` and the hint.
"""

from __future__ import annotations

__all__ = [
    "BackgroundSaveError",
    "CaptureError",
    "CheckpointExistsError",
    "CheckpointNotFoundError",
    "CkptError",
    "FormatError",
    "HubAuthError",
    "HubError",
    "HubNotFoundError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidNameError",
    "NeedsForceError",
    "PickleRequiredError",
    "ProtectedCheckpointError",
    "RestoreError",
    "SourceError",
    "SourceNotFoundError",
    "StoreBusyError",
    "StoreError",
    "StoreNotFoundError",
    "StorePermissionError",
    "UnsafeFileError",
    "UnsafePathError",
    "UnsupportedSourceError",
]


class CkptError(Exception):
    """Base class of every ckpt_notebook error.

    ``CkptError(message, ref=..., url=..., path=..., hint=..., keyword=...)``: the facts are
    optional and keyword-only; the hint is appended to the message after ``"; "``.
    """

    ref: str | None
    url: str | None
    path: str | None
    hint: str | None
    keyword: str | None

    def __init__(self, *args: object, ref: str | None = None, url: str | None = None,
                 path: str | None = None, hint: str | None = None,
                 keyword: str | None = None) -> None:
        super().__init__(*args)
        self.ref, self.url, self.path, self.hint = ref, url, path, hint
        self.keyword = keyword

    @property
    def message(self) -> str:
        """What was wrong, without the hint."""
        return str(self.args[0]) if self.args else self.__class__.__name__

    def __str__(self) -> str:  # LookupError/KeyError would repr() the message; keep it plain.
        return f"{self.message}; {self.hint}" if self.hint else self.message


class StoreError(CkptError, OSError):
    """The store could not be opened, read or written."""


class StoreBusyError(StoreError):
    """Another process holds the store in a way that conflicts with this operation."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """Nothing is at a store URL that must name an existing store (a mistyped path)."""


class StorePermissionError(StoreError, PermissionError):
    """A store folder that may not be written, or that would let others read what is copied."""


class CheckpointNotFoundError(CkptError, LookupError):
    """A REF (id, name, ``latest``, ``best.<metric>``) that names no checkpoint."""


class SourceError(CkptError, OSError):
    """A copy source (a folder, file, archive, URL or git repository) that cannot be read,
    or holds nothing to copy."""


class SourceNotFoundError(SourceError, CheckpointNotFoundError, FileNotFoundError):
    """Nothing is at a copy source: no such file, folder or URL (and, for a bare name, no
    checkpoint of that REF either, hence also a :class:`CheckpointNotFoundError`)."""


class UnsupportedSourceError(SourceError):
    """A source no copy can read as it is: an encrypted archive member, a Git LFS pointer
    served in place of the file, a git URL without the git command."""


class HubError(CkptError, OSError):
    """An upload to the Hugging Face Hub failed (huggingface_hub's error is the cause)."""


class HubNotFoundError(HubError, FileNotFoundError):
    """The Hub repo or branch does not exist, or this token cannot see it."""


class HubAuthError(HubError, PermissionError):
    """The Hub refused the token, or the token may not write to the repo."""


class CheckpointExistsError(CkptError, FileExistsError):
    """A write-once checkpoint name is already taken."""


class ProtectedCheckpointError(CkptError, PermissionError):
    """Deleting a named, pinned or in-use checkpoint without ``force``: names are meant to
    stay."""


NeedsForceError = ProtectedCheckpointError  # its first name, kept for existing ``except`` clauses


class InvalidArgumentError(CkptError, ValueError):
    """An argument to the Python API that cannot be used: a duration, a count, a policy
    option, a URL, a limit."""


class InvalidNameError(InvalidArgumentError):
    """A checkpoint name that breaks the naming rule."""


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


class BackgroundSaveError(CkptError, RuntimeError):
    """An asynchronous save failed in the background; raised at the next call."""
