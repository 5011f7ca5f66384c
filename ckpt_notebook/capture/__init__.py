"""What state is: snapshot objects into JSON trees + arrays, and load them back.

Never imports storage; imports torch only when a torch object is captured or restored.
"""

from .objects import (
    RNG_NAME,
    ObjectSnapshot,
    check_fits,
    fingerprint,
    load_into,
    snapshot,
    snapshot_rng,
)
from .stateful import Stateful, classify
from .tree import Decoder, PickleEntry, TensorEntry

__all__ = [
    "RNG_NAME",
    "Decoder",
    "ObjectSnapshot",
    "PickleEntry",
    "Stateful",
    "TensorEntry",
    "check_fits",
    "classify",
    "fingerprint",
    "load_into",
    "snapshot",
    "snapshot_rng",
]
