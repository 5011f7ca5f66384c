"""Concurrency: several processes saving into one store lose nothing and corrupt nothing.

Real processes (``saver.py save``, forked by tests/helpers/forkserver.py so torch is imported
once) save into one local store at once, released together by a "go" file. Afterwards every
checkpoint any of them reported is listed, verifies and restores to exactly the weights that
process saved; the index is consistent once listed; and ``gc`` running beside a saver
(exclusive lock vs. the savers' shared lock) never breaks a checkpoint, also when the
checkpoints share blobs that gc is deleting the owners of.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ckpt_notebook.manager import Checkpointer, resolve_ref  # noqa: E402
from ckpt_notebook.storage import Store  # noqa: E402

HELPERS = Path(__file__).resolve().parent / "helpers"


def load_helper(name: str) -> ModuleType:
    """``tests/helpers/<name>.py``, imported by path (tests/ need not be a package)."""
    key = f"_ckpt_tests_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HELPERS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


saver = load_helper("saver")
forkserver = load_helper("forkserver")
BASE = saver.base_state()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Forks the saving processes (each a real process; torch is imported once)."""
    srv = forkserver.ForkServer(tmp_path_factory.mktemp("forkserver") / "stderr.log")
    try:
        yield srv
    finally:
        srv.close()


def saved_lines(lines: list[str]) -> list[tuple[str, str]]:
    return [(p[1], p[2]) for p in (ln.split() for ln in lines) if p[0] == "SAVED"]


def restore_and_check(store: Store, ckpt_id: str, step: int, offset: float,
                      opt_steps: int | None = None) -> None:
    """Restore ``ckpt_id`` into a fresh model + optimizer here; compare with what was saved."""
    model = saver.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    report = Checkpointer(store, model=model, optimizer=opt, rng=False).restore(ckpt_id)
    assert report.checkpoint.id == ckpt_id
    assert set(report.restored) == {"model", "optimizer"}
    expected = saver.expected_state(step, offset, BASE)
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), f"{ckpt_id}: {key} is not what was saved"
    if opt_steps is not None:
        for per_param in opt.state_dict()["state"].values():
            assert int(per_param["step"]) == opt_steps


def index_ids(store_dir: Path) -> dict[str, Any]:
    return json.loads((store_dir / "index.json").read_text())["entries"]


def tmp_files(store_dir: Path) -> list[str]:
    return [f for _, _, files in os.walk(store_dir / "tmp") for f in files]


def test_three_processes_saving_at_once(server: Any, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    go = tmp_path / "go"
    count = 8
    offsets = {"alpha": 0.0, "beta": 100.0, "gamma": 200.0}
    procs = {tag: server.fork("save", store_dir, "--go", go, "--count", count, "--offset",
                              offset, "--tag", tag, "--mode", "mixed", "--name", "shared")
             for tag, offset in offsets.items()}
    for p in procs.values():
        p.wait_ready()
    go.touch()  # all three start saving at the same moment
    results = {tag: p.finish() for tag, p in procs.items()}

    reported: dict[str, tuple[str, int]] = {}  # id -> (tag, step)
    named_winners = []
    for tag, lines in results.items():
        steps = []
        for ckpt_id, step in saved_lines(lines):
            assert ckpt_id not in reported, f"id {ckpt_id} reported twice"
            if step == "named":
                named_winners.append((tag, ckpt_id))
            else:
                reported[ckpt_id] = (tag, int(step))
                steps.append(int(step))
        assert sorted(steps) == list(range(1, count + 1)), f"{tag} did not save every step"
    # Exactly one process got the write-once name; the others were told it was taken.
    assert len(named_winners) == 1, named_winners
    exists = [tag for tag, lines in results.items()
              if any(ln.startswith("EXISTS") for ln in lines)]
    assert sorted([*exists, named_winners[0][0]]) == sorted(offsets)

    store = Store(store_dir)
    assert tmp_files(store_dir) == [], "finished saves left temp files"
    infos = {i.id: i for i in store.list()}
    assert set(infos) == set(reported) | {"shared"}, "a checkpoint was lost or invented"
    # After listing, the index names exactly the manifests, with their metadata.
    entries = index_ids(store_dir)
    assert set(entries) == set(infos) == store.index.ids_on_disk()
    for ckpt_id, (tag, step) in reported.items():
        assert entries[ckpt_id]["run"] == tag and entries[ckpt_id]["step"] == step
        assert infos[ckpt_id].run == tag and infos[ckpt_id].step == step

    for ckpt_id, (tag, step) in reported.items():
        assert store.verify(ckpt_id) == [], f"{ckpt_id} from {tag} does not verify"
        restore_and_check(store, ckpt_id, step, offsets[tag], opt_steps=step)
    winner, winner_id = named_winners[0]
    assert winner_id == "shared" and resolve_ref(store, "shared").run == winner
    assert store.verify("shared") == []
    restore_and_check(store, "shared", 0, offsets[winner], opt_steps=count)

    # The losers of the name race may have written blobs nobody names; gc removes only those.
    store.gc()
    assert tmp_files(store_dir) == []
    assert set(store.blobs.all_digests()) == store.referenced_blobs()
    for ckpt_id in infos:
        assert store.verify(ckpt_id) == []


def test_gc_beside_a_saver(server: Any, tmp_path: Path) -> None:
    """gc (exclusive) runs again and again while another process saves (shared), and the
    test deletes older checkpoints meanwhile, so gc has blobs to remove, including owners of
    the blob that every save shares (the fixed buffer). No checkpoint the saver made breaks."""
    store_dir = tmp_path / "store"
    go, gate = tmp_path / "go", tmp_path / "gc-runs"
    gate.mkdir()
    count = 14
    # --gate: the saver's save of step S waits until gc has run S-1 times (gate/<n> after run n)
    proc = server.fork("save", store_dir, "--go", go, "--count", count, "--offset", 7.0,
                       "--tag", "busy", "--mode", "mixed", "--gate", gate)
    store = Store(store_dir)
    deleted: set[str] = set()
    gc_runs = gc_removed = 0
    proc.wait_ready()
    # First: while gc's exclusive lock is held, the saver cannot commit.
    with store.lock(exclusive=True):
        go.touch()
        time.sleep(1.0)
        proc.drain()
        assert proc.saved() == [], "a save went through while gc held the store"
        assert not store.index.ids_on_disk()
    while proc.running():
        time.sleep(0.01)
        # Delete all but the newest two reported checkpoints, then collect garbage.
        for ckpt_id, _ in proc.saved()[:-2]:
            if ckpt_id not in deleted:
                store.delete(ckpt_id)
                deleted.add(ckpt_id)
        report = store.gc()
        gc_runs += 1
        gc_removed += report.blobs_removed
        (gate / str(gc_runs)).touch()
    proc.finish()
    reported = [(i, int(s)) for i, s in proc.saved()]

    assert len(reported) == count
    assert gc_runs >= 5 and gc_removed > 0, (gc_runs, gc_removed)
    kept = [(i, s) for i, s in reported if i not in deleted]
    assert len(kept) >= 2
    assert {i.id for i in store.list()} == {i for i, _ in kept}
    for ckpt_id, step in kept:
        assert store.verify(ckpt_id) == [], f"{ckpt_id} broke while gc ran beside the saver"
        restore_and_check(store, ckpt_id, step, 7.0, opt_steps=step)
    store.gc()
    assert tmp_files(store_dir) == []
    assert set(store.blobs.all_digests()) == store.referenced_blobs()


def test_gc_waits_for_a_save_holding_the_store(tmp_path: Path) -> None:
    """The other direction: a save holds the store shared; gc (another holder) must wait."""
    store = Store(tmp_path / "store")
    model = saver.build_model()
    Checkpointer(store, model=model, run="a").save(step=1, wait=True)
    finished = threading.Event()

    def run_gc() -> None:
        Store(tmp_path / "store").gc()
        finished.set()

    with store.lock():
        thread = threading.Thread(target=run_gc, daemon=True)
        thread.start()
        time.sleep(0.5)
        assert not finished.is_set(), "gc ran while a save held the store"
    thread.join(timeout=30)
    assert finished.is_set()


def test_gc_beside_writers_of_the_small_store_files(server: Any, tmp_path: Path) -> None:
    """Pins, the retention policy, "save now" requests and metric history are written
    outside the save lock; gc running meanwhile must not make those writes fail."""
    store_dir = tmp_path / "store"
    go = tmp_path / "go"
    proc = server.fork("control", store_dir, "--count", 300, "--go", go)
    proc.wait_ready()
    store = Store(store_dir)
    go.touch()
    runs = 0
    while proc.running():
        store.gc()
        runs += 1
        proc.drain()
    lines = proc.finish()  # fails if a write failed
    assert runs > 0
    assert "DONE 300" in lines
    assert Store(store_dir).policy.read() == {"keep_last": 300}
