"""Crash safety: SIGKILL a process in the middle of saving, at random moments.

"A crash at any moment leaves a readable store whose ``latest`` verifies; ``gc`` removes
leftovers." A fork server (tests/helpers/forkserver.py running ``saver.py serve``) imports
torch once and forks savers that save in a loop (sync and async saves, several blobs each)
until the test kills them with SIGKILL after a seeded random delay. After every kill the
test opens the store, lists it, verifies and restores ``latest`` in this process, runs
``gc`` and checks nothing is left over.
"""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ckpt_notebook.errors import CheckpointNotFoundError  # noqa: E402
from ckpt_notebook.manager import Checkpointer, resolve_ref  # noqa: E402
from ckpt_notebook.storage import Store  # noqa: E402

HELPERS = Path(__file__).resolve().parent / "helpers"
N_TRIALS = 20
SEED = 20240611


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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = forkserver.ForkServer(tmp_path_factory.mktemp("forkserver") / "stderr.log")
    try:
        yield srv
    finally:
        srv.close()


def tmp_files(store: Path) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(store / "tmp") for f in files]


def restore_latest(store: Store) -> tuple[str, int, torch.nn.Module, torch.optim.Optimizer]:
    """Restore ``latest`` into a fresh model and optimizer in this process."""
    model = saver.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # the saver wrote under its own run: the store's newest, of any run (issue 13)
    report = Checkpointer(store, model=model, optimizer=opt, rng=False).restore("latest@any")
    assert set(report.restored) == {"model", "optimizer"}
    return report.checkpoint.id, int(report.checkpoint.step), model, opt


def check_after_crash(store_dir: Path, reported: list[tuple[str, int]],
                      already_verified: set[str]) -> dict[str, int]:
    """Everything the crash requirement promises, for one killed saver."""
    store = Store(store_dir)
    infos = store.list()  # the store always opens and lists
    ids = {i.id for i in infos}
    assert ids == store.index.ids_on_disk(), "the listing must show every committed manifest"
    # Every save the killed process saw committed survived the kill.
    lost = [ckpt_id for ckpt_id, _ in reported if ckpt_id not in ids]
    assert not lost, f"committed checkpoints lost by the crash: {lost}"
    for info in infos:
        if info.id not in already_verified:
            assert store.verify(info.id) == [], f"{info.id} does not verify after the crash"
            already_verified.add(info.id)

    latest = resolve_ref(store, "latest")
    assert store.verify(latest.id) == []
    restored_id, step, model, opt = restore_latest(store)
    assert restored_id == latest.id
    # Not torn: every tensor of the model and the optimizer comes from the same save.
    expected = saver.expected_state(step)
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), f"{latest.id}: {key} is not step {step}'s"
    steps_taken = step % 1000  # each saver starts at a multiple of 1000, one opt step a save
    for per_param in opt.state_dict()["state"].values():
        assert int(per_param["step"]) == steps_taken

    stats = {"tmp": len(tmp_files(store_dir)),
             "orphans": len(set(store.blobs.all_digests()) - store.referenced_blobs())}

    # Keep the store small: drop all but the two newest, then gc everything else.
    for info in sorted(infos, key=lambda i: (i.created, i.id))[:-2]:
        store.delete(info.id)
    report = store.gc()
    assert tmp_files(store_dir) == [], "gc left temp files"
    assert report.temp_removed == stats["tmp"]
    refs = store.referenced_blobs()
    on_disk = set(store.blobs.all_digests())
    assert refs <= on_disk, f"gc removed blobs still in use: {sorted(refs - on_disk)[:3]}"
    assert on_disk == refs, "gc left unreferenced blobs"
    assert store.verify(resolve_ref(store, "latest").id) == []
    return stats


def kill_at_random(child: Any, delay: float) -> list[tuple[str, int]]:
    """SIGKILL ``child`` after ``delay`` seconds; the saves it reported committed."""
    time.sleep(delay)
    sig, code = child.kill()
    assert sig == signal.SIGKILL, (f"the saver ended by itself (exit {code}) before the "
                                   f"kill:\n{child.server.stderr()}")
    return [(ckpt_id, int(step)) for ckpt_id, step in child.saved()]


def test_sigkill_mid_save_at_random_moments(server: Any, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    rnd = random.Random(SEED)
    verified: set[str] = set()
    stats = []
    for trial in range(N_TRIALS):
        child = server.fork("worker", store_dir, SEED + trial, trial * 1000)
        # Wait for its first commit (a slow machine must not turn every trial into a kill
        # before the first save), then kill it somewhere in the saves that follow.
        child.expect("SAVED")
        reported = kill_at_random(child, rnd.uniform(0.0, 0.45))
        stats.append(check_after_crash(store_dir, reported, verified))

    # The kills really landed in the middle of saves: some left temp files or blobs that no
    # manifest names yet (which gc then removed).
    torn = sum(1 for s in stats if s["tmp"] or s["orphans"])
    assert torn >= 3, f"only {torn} of {N_TRIALS} kills interrupted a save: {stats}"


def test_sigkill_while_creating_a_store(server: Any, tmp_path: Path) -> None:
    """A saver killed during the very first save into a new folder leaves a usable store."""
    rnd = random.Random(SEED + 1)
    for trial in range(6):
        store_dir = tmp_path / f"store{trial}"
        child = server.fork("worker", store_dir, SEED + 100 + trial, 0)
        kill_at_random(child, rnd.uniform(0.0, 0.2))
        store = Store(store_dir)
        infos = store.list()
        if infos:
            assert store.verify(resolve_ref(store, "latest").id) == []
        else:
            with pytest.raises(CheckpointNotFoundError):
                resolve_ref(store, "latest")
        if store_dir.exists():
            store.gc()
            assert tmp_files(store_dir) == []
        # The half-created store still takes new checkpoints, and they restore.
        model = saver.build_model()
        info = Checkpointer(store_dir, model=model, run="after-crash").save(step=7, wait=True)
        assert resolve_ref(Store(store_dir), "latest").id == info.id
        assert Store(store_dir).verify(info.id) == []
