"""The manager layer: the Checkpointer and the operations the UI, server and CLI share."""

from .checkpointer import Checkpointer
from .reading import export_weights, read_states
from .refs import is_weights_file, new_id, resolve_ref

__all__ = ["Checkpointer", "export_weights", "is_weights_file", "new_id", "read_states",
           "resolve_ref"]
