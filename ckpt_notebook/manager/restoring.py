"""Which saved tensors a restore reads straight into the model (see storage/direct.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import capture
from ..errors import RestoreError
from ..storage import Store
from ..storage.direct import read_tensor_into, verify_blobs
from ..types import CheckpointInfo

__all__ = ["DirectReads", "direct_reads", "refuse_files", "refuse_no_match", "verify_blobs"]


@dataclass
class DirectReads:
    """One module's large tensors to read in place: (manifest entry, destination) pairs."""

    where: str
    entries: list[tuple[dict[str, Any], Any]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [t["path"] for t, _ in self.entries]

    @property
    def blobs(self) -> list[tuple[str, int, str]]:
        return [(t["blob"], t["blob_size"], f"{self.where}: tensor {t['path']}")
                for t, _ in self.entries]

    def read(self, store: Store) -> None:
        from ..capture.torch import writable_memory

        for t, target in self.entries:
            read_tensor_into(store.blobs, t["blob"], t["key"], writable_memory(target),
                             where=f"{self.where}: tensor {t['path']}")


def direct_reads(ckpt_id: str, saved: Mapping[str, Any], plan: Sequence[str],
                 objects: Mapping[str, Any]) -> dict[str, DirectReads]:
    """Per module: tensors alone in their blob whose destination is a contiguous CPU tensor
    of the same dtype and shape (others go through ``load_state_dict``)."""
    out: dict[str, DirectReads] = {}
    for name in plan:
        obj = objects.get(name)
        if saved[name]["kind"] != "module" or obj is None or capture.classify(obj) != "module":
            continue
        from ..capture.torch import TORCH_TO_ST, direct_targets

        targets = direct_targets(obj)
        reads = DirectReads(f"checkpoint {ckpt_id}: {name}")
        for t in saved[name].get("tensors", ()):
            target = targets.get(t["path"])
            if (t["key"] == "t" and t["array"] == "torch" and target is not None
                    and TORCH_TO_ST.get(target.dtype) == t["dtype"]
                    and list(target.shape) == list(t["shape"])):
                reads.entries.append((t, target))
        if reads.entries:
            out[name] = reads
    return out


def refuse_files(info: CheckpointInfo) -> None:
    """A files checkpoint (a copied folder) holds no training state: restoring it would load
    nothing and still say "Restored"."""
    if info.kind == "files":
        label = info.name or info.id
        raise RestoreError(f"{label!r} is a files checkpoint (a copied folder), not training "
                           f"state: there is nothing to restore; `%checkpoint use {label}` "
                           "(ckpt_notebook.materialize in Python) gives its files")


def refuse_no_match(name: str, module: Any, missing: Sequence[str], unexpected: Sequence[str],
                    *, source: str) -> None:
    """A non-strict load that matches none of a module's keys would load nothing at all."""
    expected = len(module.state_dict())
    if expected and len(missing) == expected:
        saved = f", {source} has {unexpected[0]!r}" if unexpected else ""
        raise RestoreError(f"{source} matched no key of {name!r} (it expects {missing[0]!r}"
                           f"{saved}): nothing was loaded; build the model as it was saved")
