"""Corruption heals: a blob found bad is quarantined, so the next save or copy of its bytes
writes it again; `ckpt repair` fetches bad and missing blobs from a healthy copy.

Each test starts from a real store written by a Checkpointer (or a copy), damages it on
disk or on the S3 server (moto, on 127.0.0.1) the way a rotten disk or a hostile writer
would, and checks what the store, a save, a copy, a restore and `ckpt repair` make of it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from servers import S3Server

from ckpt_notebook import Checkpointer
from ckpt_notebook.cli import main
from ckpt_notebook.errors import IntegrityError
from ckpt_notebook.manager.copying import copy
from ckpt_notebook.storage import Store
from ckpt_notebook.types import CheckpointInfo

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _private_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def frozen_model(seed: int = 0) -> torch.nn.Sequential:
    """Two 1 MiB layers (each weight a blob of its own); the first is frozen."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 512))
    model[0].requires_grad_(False)
    return model


def train(model: torch.nn.Sequential, step: int) -> None:
    with torch.no_grad():
        model[1].weight.add_(0.01 * step)
        model[1].bias.add_(0.01 * step)


def blob_of(store: Store, ckpt_id: str, obj: str = "model", path: str = "0.weight") -> str:
    entry = next(t for t in store.manifest(ckpt_id).objects[obj].tensors if t.path == path)
    return str(entry.blob)


def blob_file(root: Path, digest: str) -> Path:
    return root / "blobs" / digest[:2] / digest


def flip(root: Path, digest: str) -> None:
    """One flipped bit in the middle of a stored blob: same size, other bytes."""
    path = blob_file(root, digest)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def restores_exactly(root: Path, ckpt_id: str, want: dict[str, torch.Tensor]) -> bool:
    model = frozen_model(seed=99)
    Checkpointer(root, model=model, rng=False).restore(ckpt_id)
    return all(torch.equal(v, want[k]) for k, v in model.state_dict().items())


def save(ckpt: Checkpointer, step: int) -> CheckpointInfo:
    """One save, waited for: async saves go through the background path."""
    info = ckpt.save(step=step)
    done = ckpt.wait()
    return done if done is not None else info


def three_saves(root: Path, *, async_save: bool = False,
                ) -> tuple[torch.nn.Sequential, Checkpointer, list[CheckpointInfo],
                           list[dict[str, torch.Tensor]]]:
    """Three saves of a model whose first layer is frozen: from the third on, a sync save
    reuses the frozen weight's blob because it matches its host copy, an async one because
    its snapshot buffer already holds it (neither hashes it)."""
    model = frozen_model()
    ckpt = Checkpointer(root, model=model, rng=False, async_save=async_save)
    infos, states = [], []
    for step in (1, 2, 3):
        train(model, step)
        infos.append(save(ckpt, step))
        states.append(snapshot(model))
    return model, ckpt, infos, states


# -- a save heals --------------------------------------------------------------------------
@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_the_next_save_heals_a_blob_verify_found_bad(store_dir: Path, async_save: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model, ckpt, infos, states = three_saves(store_dir, async_save=async_save)
    store = ckpt.store
    frozen = blob_of(store, infos[0].id)
    assert all(blob_of(store, i.id) == frozen for i in infos)
    flip(store_dir, frozen)

    problems = ckpt.verify()
    assert [(p.checkpoint, p.blob) for p in problems] == [(i.id, frozen) for i in infos]
    assert "corrupt" in problems[0].problem and "quarantined" in problems[0].problem
    assert not blob_file(store_dir, frozen).exists()
    assert (store_dir / "quarantine" / frozen).exists()  # kept for inspection

    # The save vouches for the frozen weight without hashing it (host copy / snapshot
    # buffer), but still asks the store, which no longer has it: it is written again.
    from ckpt_notebook.storage import blobs

    hashed: list[int] = []
    real = blobs.hash_chunks
    monkeypatch.setattr(blobs, "hash_chunks",
                        lambda chunks: hashed.append(sum(memoryview(c).nbytes
                                                         for c in chunks)) or real(chunks))
    train(model, 4)
    healed = save(ckpt, 4)
    assert len([n for n in hashed if n >= MiB]) == 1  # only the trained layer was hashed
    assert healed.new_bytes is not None and healed.new_bytes >= 2 * MiB
    assert blob_of(store, healed.id) == frozen and blob_file(store_dir, frozen).exists()
    assert ckpt.verify() == []  # the older checkpoints too
    for info, want in zip(infos, states, strict=True):
        assert restores_exactly(store_dir, info.id, want)


@pytest.mark.parametrize("what", ["model", "data"])
def test_the_next_save_heals_a_blob_restore_found_bad(store_dir: Path, what: str) -> None:
    """Restore finds the bad blob (a module's large tensor is verified, then read in place;
    a numpy array in a value is read and verified), fails saying how to heal, and the next
    save heals it."""
    table = np.arange(512 * 512, dtype=np.float32).reshape(512, 512)
    model = frozen_model()
    ckpt = Checkpointer(store_dir, model=model, data={"table": table}, rng=False,
                        async_save=False)
    first = ckpt.save(step=1)
    want = snapshot(model)
    digest = (blob_of(ckpt.store, first.id) if what == "model"
              else blob_of(ckpt.store, first.id, "data", "table"))
    flip(store_dir, digest)

    other = Checkpointer(store_dir, model=frozen_model(seed=5), data=None, rng=False)
    with pytest.raises(IntegrityError) as excinfo:
        other.restore(first.id)
    message = str(excinfo.value)
    assert digest[:16] in message and "corrupt" in message and "quarantined" in message
    assert "ckpt repair --from" in message and "save again" in message
    assert not blob_file(store_dir, digest).exists()
    with pytest.raises(IntegrityError, match="quarantined"):  # and again, until healed
        other.restore(first.id)

    train(model, 2)
    healed = ckpt.save(step=2)
    assert healed.new_bytes is not None and healed.new_bytes >= 2 * MiB
    assert ckpt.verify() == []
    assert restores_exactly(store_dir, first.id, want)
    other.restore(first.id)
    assert np.array_equal(other.objects["data"]["table"], table)


def test_a_save_rewrites_a_truncated_blob_nobody_found_yet(store_dir: Path) -> None:
    """On a local store the stat that answers "is it there?" also gives the size: a blob
    of the wrong size is quarantined and written again by the save that meets it."""
    model, ckpt, infos, states = three_saves(store_dir)
    frozen = blob_of(ckpt.store, infos[0].id)
    path = blob_file(store_dir, frozen)
    path.write_bytes(path.read_bytes()[:4096])  # a file a crash left short
    train(model, 4)
    healed = save(ckpt, 4)
    assert healed.new_bytes is not None and healed.new_bytes >= 2 * MiB
    assert ckpt.verify() == []
    assert restores_exactly(store_dir, infos[0].id, states[0])


# -- a copy heals --------------------------------------------------------------------------
def replica_pair(tmp_path: Path) -> tuple[Path, Path, CheckpointInfo, str]:
    """A healthy store and a replica of it (a copy of its folder); the frozen weight's blob."""
    healthy = tmp_path / "healthy"
    _model, ckpt, infos, _states = three_saves(healthy)
    replica = tmp_path / "replica"
    shutil.copytree(healthy, replica)
    return healthy, replica, infos[-1], blob_of(ckpt.store, infos[-1].id)


def test_a_copy_from_a_healthy_replica_heals_a_blob_verify_found_bad(tmp_path: Path) -> None:
    healthy, replica, info, frozen = replica_pair(tmp_path)
    flip(replica, frozen)
    assert {p.blob for p in Store(replica).verify(info.id)} == {frozen}

    copied = copy(info.id, "good", to=Store(replica), store=Store(healthy))
    assert copied.new_bytes is not None and copied.new_bytes >= MiB  # not "0 B new"
    assert Store(replica).verify("good") == []
    assert Store(replica).verify(info.id) == []  # the damaged original heals too


def test_a_copy_checks_a_target_blob_of_the_wrong_size(tmp_path: Path) -> None:
    """Not found bad yet: copy compares the sizes of the blobs the target holds (a stat
    each locally, the listing on object stores) and re-copies a short one."""
    healthy, replica, info, frozen = replica_pair(tmp_path)
    path = blob_file(replica, frozen)
    path.write_bytes(path.read_bytes()[:-100])
    copied = copy(info.id, "good", to=Store(replica), store=Store(healthy))
    assert copied.new_bytes is not None and copied.new_bytes >= MiB
    assert Store(replica).verify("good") == [] and Store(replica).verify(info.id) == []


def test_a_copy_quarantines_a_bad_blob_in_its_source(tmp_path: Path) -> None:
    healthy, replica, info, frozen = replica_pair(tmp_path)
    empty = tmp_path / "empty"
    flip(healthy, frozen)
    with pytest.raises(IntegrityError, match="corrupt"):
        copy(info.id, "bad", to=Store(empty), store=Store(healthy))
    assert not Store(empty).exists("bad")
    assert (healthy / "quarantine" / frozen).exists()
    # the replica still has it: the source heals from there
    copy(info.id, "fixed", to=Store(healthy), store=Store(replica))
    assert Store(healthy).verify(info.id) == []


# -- quarantine itself ---------------------------------------------------------------------
def test_a_manifest_that_lies_about_a_size_does_not_quarantine_a_sound_blob(
        tmp_path: Path) -> None:
    _healthy, replica, _info, frozen = replica_pair(tmp_path)
    blobs = Store(replica).blobs
    size = blob_file(replica, frozen).stat().st_size
    assert "the manifest is wrong" in (blobs.check(frozen, size + 1) or "")
    with pytest.raises(IntegrityError, match="the manifest is wrong"):
        blobs.read(frozen, size - 1, where="test")
    assert blob_file(replica, frozen).exists()
    assert not (replica / "quarantine").exists()
    assert blobs.lacking({frozen: size + 7}) == set()


@pytest.mark.parametrize("digest", ["../../../outside", "A" * 64, "ab" * 31 + "/x",
                                    "0" * 63, "..", ""])
def test_quarantine_builds_no_path_from_a_digest_that_is_not_one(store_dir: Path,
                                                                digest: str) -> None:
    store = Store(store_dir)
    store.ensure_writable()
    before = sorted(p.name for p in store_dir.parent.iterdir())
    assert (store.blobs.check(digest, 10) or "").startswith("not a blob name")
    with pytest.raises(IntegrityError, match="not a blob name"):
        store.blobs.quarantine(digest)
    with pytest.raises(IntegrityError, match="not a blob name"):
        store.blobs.read(digest, 10, where="test")
    assert sorted(p.name for p in store_dir.parent.iterdir()) == before
    assert not (store_dir / "quarantine").exists()


def test_a_listing_forgets_a_blob_quarantined_inside_its_batch() -> None:
    """On object stores `has()` answers from one listing inside a batch: a blob quarantined
    meanwhile must not be vouched for by it."""
    import uuid

    from ckpt_notebook.storage.blobs import LIST_MIN, blob_path

    store = Store(f"memory://heal-{uuid.uuid4().hex[:8]}/store")
    good = store.blobs.put([b"x" * 1000])
    with store.blobs.batch(LIST_MIN):
        assert store.blobs.has(good.digest)
        store.backend.write_atomic(blob_path(good.digest), [b"y" * 1000])  # rot
        with pytest.raises(IntegrityError, match="quarantined"):
            store.blobs.read(good.digest, 1000, where="test")
        assert not store.blobs.has(good.digest)
        assert store.blobs.put([b"x" * 1000]).new
    assert store.blobs.check(good.digest, 1000) is None


# -- ckpt repair ---------------------------------------------------------------------------
def damaged_pair(tmp_path: Path) -> tuple[Path, Path, list[CheckpointInfo], dict[str, Any]]:
    """A store with one flipped blob (the frozen weight: every checkpoint needs it) and
    one deleted blob (the first checkpoint's trained weight: only it needs it), and a
    healthy mirror of it."""
    root = tmp_path / "store"
    _model, ckpt, infos, states = three_saves(root)
    mirror = tmp_path / "mirror"
    shutil.copytree(root, mirror)
    frozen = blob_of(ckpt.store, infos[0].id)
    trained = blob_of(ckpt.store, infos[0].id, path="1.weight")
    flip(root, frozen)
    blob_file(root, trained).unlink()
    return root, mirror, infos, {"frozen": frozen, "trained": trained, "states": states}


def test_repair_from_a_mirror_fixes_a_flipped_byte_and_a_deleted_blob(tmp_path: Path) -> None:
    from ckpt_notebook.manager.repair import repair

    root, mirror, infos, damage = damaged_pair(tmp_path)
    report = repair(root, source=str(mirror))
    assert report.ok, str(report)
    assert {b.digest for b in report.fixed} == {damage["frozen"], damage["trained"]}
    assert report.broken == []
    assert sorted(report.restorable) == sorted(i.id for i in infos)
    assert report.still_broken == [] and report.checkpoints == 3
    by_blob = {b.digest: b for b in report.blobs}
    assert "corrupt" in by_blob[damage["frozen"]].problem
    assert by_blob[damage["trained"]].problem == "missing"
    assert str(mirror) in by_blob[damage["frozen"]].outcome
    assert (root / "quarantine" / damage["frozen"]).exists()
    assert all(Store(root).verify(i.id) == [] for i in infos)
    for info, want in zip(infos, damage["states"], strict=True):
        assert restores_exactly(root, info.id, want)
    again = repair(root, source=str(mirror))
    assert again.ok and again.blobs == [] and again.blobs_checked == report.blobs_checked


def test_repair_without_a_source_says_what_stays_broken(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         ) -> None:
    from ckpt_notebook.manager.repair import repair

    root, mirror, infos, damage = damaged_pair(tmp_path)
    dry = repair(root, dry_run=True)  # changes nothing: the bad blob stays where it is
    assert blob_file(root, damage["frozen"]).exists()
    assert not (root / "quarantine").exists()
    assert not dry.ok and {b.digest for b in dry.broken} == {damage["frozen"], damage["trained"]}

    report = repair(root)
    assert not report.ok and report.fixed == []
    assert {b.digest for b in report.broken} == {damage["frozen"], damage["trained"]}
    assert all("--from" in b.outcome for b in report.broken)
    assert sorted(report.still_broken) == sorted(i.id for i in infos)
    assert report.restorable == []
    text = str(report)
    assert "still broken" in text and infos[0].id in text and damage["frozen"][:16] in text

    # The CLI: a table, exit 1 while something stays broken; --json; --dry-run --from.
    assert main(["--store", str(root), "repair"]) == 1
    out = capsys.readouterr().out
    assert "BLOB" in out and "still broken" in out and damage["trained"][:16] in out
    assert main(["--store", str(root), "repair", "--from", str(mirror), "--dry-run",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] and doc["ok"] and len(doc["fixed"]) == 2
    assert not blob_file(root, damage["trained"]).exists()  # a dry run fetched nothing
    assert main(["--store", str(root), "repair", "--from", str(mirror)]) == 0
    assert "2 fixed, 0 still broken" in capsys.readouterr().out
    assert main(["--store", str(root), "verify", "--all"]) == 0


def test_repair_keeps_what_the_mirror_lacks_broken(tmp_path: Path) -> None:
    from ckpt_notebook.manager.repair import repair

    root, mirror, infos, damage = damaged_pair(tmp_path)
    flip(mirror, damage["frozen"])  # the mirror rotted the same way
    report = repair(root, source=str(mirror))
    assert {b.digest for b in report.fixed} == {damage["trained"]}
    [bad] = report.broken
    assert bad.digest == damage["frozen"] and str(mirror) in bad.outcome
    assert sorted(report.still_broken) == sorted(i.id for i in infos)


def test_repair_removes_quarantined_files_older_than_a_week(tmp_path: Path) -> None:
    from ckpt_notebook.manager.repair import repair

    root, mirror, _infos, damage = damaged_pair(tmp_path)
    repair(root, source=str(mirror))
    kept = root / "quarantine" / damage["frozen"]
    assert repair(root).quarantine_removed == 0 and kept.exists()
    old = time.time() - 8 * 24 * 3600
    os.utime(kept, (old, old))
    assert repair(root, dry_run=True).quarantine_removed == 1 and kept.exists()
    assert repair(root).quarantine_removed == 1 and not kept.exists()


def test_gc_removes_quarantined_files_older_than_a_week(tmp_path: Path) -> None:
    from ckpt_notebook.manager.repair import repair

    root, mirror, _infos, damage = damaged_pair(tmp_path)
    repair(root, source=str(mirror))
    kept = root / "quarantine" / damage["frozen"]
    assert Store(root).gc().quarantine_removed == 0 and kept.exists()
    old = time.time() - 8 * 24 * 3600
    os.utime(kept, (old, old))
    assert Store(root).gc(dry_run=True).quarantine_removed == 1 and kept.exists()
    report = Store(root).gc()
    assert report.quarantine_removed == 1 and not kept.exists()
    assert "1 old quarantined blob" in str(report)


def test_repair_on_s3_from_a_local_mirror(s3_server: S3Server, tmp_path: Path) -> None:
    from ckpt_notebook.manager.repair import repair

    local = tmp_path / "local"
    _model, _ckpt, infos, states = three_saves(local)
    bucket = s3_server.make_bucket("heal")
    remote = Store(s3_server.url(bucket, "store"), **s3_server.storage_options)
    copy(infos[-1].id, "run-end", to=remote, store=Store(local))
    frozen = blob_of(Store(local), infos[-1].id)
    trained = blob_of(Store(local), infos[-1].id, path="1.weight")
    client = s3_server.client()
    key = f"store/blobs/{frozen[:2]}/{frozen}"
    raw = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    raw[len(raw) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(raw))
    client.delete_object(Bucket=bucket, Key=f"store/blobs/{trained[:2]}/{trained}")

    remote = Store(s3_server.url(bucket, "store"), **s3_server.storage_options)
    report = repair(remote, source=Store(local))
    assert report.ok, str(report)
    assert {b.digest for b in report.fixed} == {frozen, trained}
    assert report.restorable == ["run-end"]
    listed = client.list_objects_v2(Bucket=bucket, Prefix="store/quarantine/")
    assert [o["Key"] for o in listed.get("Contents", ())] == [f"store/quarantine/{frozen}"]
    assert remote.verify("run-end") == []
    model = frozen_model(seed=42)
    Checkpointer(remote, model=model, rng=False).restore("run-end")
    assert all(torch.equal(v, states[-1][k]) for k, v in model.state_dict().items())
