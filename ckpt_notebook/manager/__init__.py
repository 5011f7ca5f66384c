"""The manager layer: the Checkpointer and the operations the UI, server and CLI share."""

from .checkpointer import Checkpointer
from .maintenance import (
    PruneReport,
    delete,
    load_policy,
    pin,
    prune,
    request_save,
    save_policy,
    statuses,
    unpin,
)
from .reading import export_weights, read_states
from .refs import is_weights_file, names_weights_file, new_id, resolve_ref

__all__ = [
    "Checkpointer",
    "PruneReport",
    "delete",
    "export_weights",
    "is_weights_file",
    "load_policy",
    "names_weights_file",
    "new_id",
    "pin",
    "prune",
    "read_states",
    "request_save",
    "resolve_ref",
    "save_policy",
    "statuses",
    "unpin",
]
