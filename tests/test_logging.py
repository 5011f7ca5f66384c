"""The ``ckpt_notebook`` logger: background failures and retention decisions reach it, a
notebook session shows them on stderr, and a plain script still sees the failures."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import mlp, pythonpath_env

from ckpt_notebook import Checkpointer
from ckpt_notebook.errors import BackgroundSaveError, StoreError
from ckpt_notebook.manager.committing import commit_making_room
from ckpt_notebook.storage import Store
from ckpt_notebook.types import CheckpointInfo
from ckpt_notebook.ui import session as session_mod


def break_store(root: Path) -> None:
    """The folder no longer looks like a store: the next write fails."""
    (root / "ckpt-store.json").unlink()
    (root / "stray.txt").write_text("not a store any more")


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("ckpt_notebook") and r.levelno == level]


def test_a_background_save_failure_is_logged_when_it_happens(
        store_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpt = Checkpointer(store_dir, config={"lr": 0.1}, rng=False)
    ckpt.save(wait=True)
    break_store(store_dir)
    info = ckpt.save()
    assert ckpt.pending is not None and ckpt.pending.exception(timeout=60) is not None
    [message] = records(caplog, logging.ERROR)
    assert message.startswith(f"background save of {info.id} failed: ")
    with pytest.raises(BackgroundSaveError) as raised:  # and the next call still raises it
        ckpt.list()
    assert str(raised.value) == message


def test_what_a_prune_removed_and_why_is_logged(store_dir: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ckpt_notebook")
    ckpt = Checkpointer(store_dir, config={"lr": 0.1}, rng=False)
    policy = ckpt.set_policy(keep_last=1)
    first = ckpt.save(step=1, wait=True)
    assert records(caplog, logging.INFO) == []  # nothing to prune yet
    ckpt.save(step=2, wait=True)
    pruned, gc = records(caplog, logging.INFO)
    assert pruned == (f"pruned {first.id} (step 1) from {ckpt.store.url}: the retention "
                      f"policy ({policy.describe()}) does not keep it")
    assert gc.startswith(f"prune of {ckpt.store.url}: removed ")
    assert ckpt.last_prune is not None and [i.id for i in ckpt.last_prune.removed] == [first.id]


def test_a_full_store_is_logged_before_making_room(store_dir: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    store = Store(store_dir)
    store.ensure_writable()

    def attempt(again: bool) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StoreError, match="is full"):
        commit_making_room(store, CheckpointInfo(id="x", step=5), attempt)
    assert records(caplog, logging.WARNING) == [
        f"store {store.url} is full (saving step 5): pruning by the retention policy and gc "
        "to make room, then trying once more"]


def test_the_notebook_shows_background_and_auto_save_failures(
        store_dir: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    model = mlp()
    shell = SimpleNamespace(user_ns={"model": model})
    s = session_mod.NotebookCheckpointer(shell, store_dir, rng=False)
    try:
        s.save(wait=True)
        break_store(store_dir)
        capsys.readouterr()
        info = s.save()
        assert s.pending is not None and s.pending.exception(timeout=60) is not None
        failed = f"background save of {info.id} failed: "
        assert capsys.readouterr().err.startswith(f"ckpt_notebook: {failed}")
        s.auto_settings.enabled = True
        with torch.no_grad():
            model[0].weight.add_(1)  # trained: the auto-save runs and meets the failure
        s.post_run_cell(SimpleNamespace(error_in_exec=None))
        err = capsys.readouterr().err
        assert err.startswith(f"ckpt_notebook: auto-checkpoint failed: {failed}"), err
        assert [m.split(":")[0] for m in records(caplog, logging.ERROR)] == [
            f"background save of {info.id} failed", "auto-checkpoint failed"]
    finally:
        s.close()


def test_a_plain_script_sees_a_background_failure_once(tmp_path: Path) -> None:
    """No handler of the package's own: logging's last resort prints the error to stderr
    when it happens; at exit it is not printed again."""
    script = textwrap.dedent(f"""
        import logging, pathlib
        from ckpt_notebook import Checkpointer
        root = pathlib.Path({str(tmp_path / "store")!r})
        ckpt = Checkpointer(root, config={{"lr": 0.1}}, rng=False)
        ckpt.save(wait=True)
        (root / "ckpt-store.json").unlink()
        (root / "stray.txt").write_text("not a store any more")
        info = ckpt.save()
        ckpt.pending.exception()
        print(info.id, logging.getLogger("ckpt_notebook").handlers)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=pythonpath_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    ckpt_id, handlers = done.stdout.split(" ", 1)
    assert handlers.strip() == "[]"
    assert done.stderr.count(f"background save of {ckpt_id} failed: ") == 1, done.stderr


def test_the_session_installs_one_handler(store_dir: Path) -> None:
    shell: Any = SimpleNamespace(user_ns={})
    for _ in range(2):
        session_mod.NotebookCheckpointer(shell, store_dir).close()
    handlers = logging.getLogger("ckpt_notebook").handlers
    assert sum(isinstance(h, session_mod.NotebookLogHandler) for h in handlers) == 1
