"""What state is: the Stateful protocol and how each object to save is classified.

The one extension point is the Stateful protocol (``state_dict()`` / ``load_state_dict()``),
as in ``torch.distributed.checkpoint``. Torch modules, optimizers, LR schedulers and
GradScaler already follow it; anything else that does is saved the same way. Classification
looks at class names along the MRO, so it never needs to import torch.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..types import ObjectKind

__all__ = ["Stateful", "classify", "type_name"]


@runtime_checkable
class Stateful(Protocol):
    """Anything with ``state_dict()`` and ``load_state_dict(state)``."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


_STATEFUL_KINDS: tuple[tuple[str, ObjectKind], ...] = (
    ("torch.nn.modules.module.Module", "module"),
    ("torch.optim.optimizer.Optimizer", "optimizer"),
    ("torch.optim.lr_scheduler.LRScheduler", "scheduler"),
    ("torch.optim.lr_scheduler._LRScheduler", "scheduler"),
    ("torch.optim.lr_scheduler.ReduceLROnPlateau", "scheduler"),
    ("torch.amp.grad_scaler.GradScaler", "scaler"),
    ("torch.cuda.amp.grad_scaler.GradScaler", "scaler"),
)
_GENERATORS = {
    "numpy.random._generator.Generator": "numpy",
    "random.Random": "python",
    "torch._C.Generator": "torch",
    "torch.Generator": "torch",
}


def type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _mro_names(obj: Any) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__}


def classify(obj: Any) -> ObjectKind:
    """``module``, ``optimizer``, ``scheduler``, ``scaler``, ``stateful``, ``generator`` or
    ``value`` (plain data; whether it can be saved is decided when it is encoded)."""
    names = _mro_names(obj)
    if isinstance(obj, Stateful) and not isinstance(obj, type):
        for qualname, kind in _STATEFUL_KINDS:
            if qualname in names:
                return kind
        return "stateful"
    if names & set(_GENERATORS):
        return "generator"
    return "value"


def generator_family(obj: Any) -> str:
    for name in _mro_names(obj):
        if name in _GENERATORS:
            return _GENERATORS[name]
    raise TypeError(f"not a random generator: {type_name(obj)}")
