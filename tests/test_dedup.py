"""Only blobs the store lacks are written: 10% of tensors changed -> about 10% new bytes."""

from __future__ import annotations

from pathlib import Path

import torch

import ckpt_notebook as ckn


def big_model() -> torch.nn.Module:
    torch.manual_seed(0)
    # 20 weight tensors of 1 MiB each plus small biases: large tensors get blobs of their own.
    return torch.nn.Sequential(*[torch.nn.Linear(512, 512) for _ in range(20)])


def test_ten_percent_changed_writes_at_most_twelve_percent(store_dir: Path) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    first = ckpt.save(step=1, wait=True)
    assert first.new_bytes is not None and first.new_bytes >= first.logical_bytes
    with torch.no_grad():
        for layer in list(model)[::10]:  # 2 of 20 layers: 10% of the tensor bytes
            layer.weight.add_(1.0)
    second = ckpt.save(step=2, wait=True)
    assert second.logical_bytes == first.logical_bytes
    assert second.new_bytes is not None
    assert second.new_bytes <= 0.12 * second.logical_bytes, (second.new_bytes, second.logical_bytes)
    assert second.new_bytes >= 0.09 * second.logical_bytes


def test_unchanged_save_writes_almost_nothing(store_dir: Path) -> None:
    model = big_model()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False)
    ckpt.save(wait=True)
    again = ckpt.save(wait=True)
    assert again.new_bytes == 0
    blobs = [p for p in (store_dir / "blobs").rglob("*") if p.is_file()]
    ckpt.save(wait=True)
    assert len([p for p in (store_dir / "blobs").rglob("*") if p.is_file()]) == len(blobs)


def test_blobs_are_safetensors_files(store_dir: Path) -> None:
    from safetensors.torch import load_file

    model = big_model()
    ckn.Checkpointer(store_dir, model=model, rng=False).save(wait=True)
    found = 0
    for blob in (store_dir / "blobs").rglob("*"):
        if blob.is_file():
            tensors = load_file(str(blob))
            assert tensors
            found += 1
    assert found >= 20
