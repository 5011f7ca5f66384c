"""Saving exactly the state of the previous checkpoint at the same step adds no duplicate row:
the save returns the existing checkpoint, and ``%checkpoint save`` says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ipython_shell

from ckpt_notebook import Checkpointer
from ckpt_notebook.storage import Store


@pytest.mark.parametrize("wait", [True, False])
def test_same_state_same_step_returns_the_existing_checkpoint(tmp_path: Path,
                                                              wait: bool) -> None:
    model = torch.nn.Linear(3, 3)
    ck = Checkpointer(str(tmp_path / "s"), run="r", model=model)
    first = ck.save(step=5, metrics={"loss": 0.5}, wait=True)
    again = ck.save(step=5, metrics={"loss": 0.5}, wait=wait)
    if not wait:
        again = ck.wait()
    assert again is not None and again.id == first.id
    assert [i.id for i in Store(str(tmp_path / "s")).list()] == [first.id]
    ck.close()


def test_a_changed_state_or_another_step_is_saved(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 3)
    ck = Checkpointer(str(tmp_path / "s"), run="r", model=model)
    first = ck.save(step=5, wait=True)
    assert ck.save(step=6, wait=True).id != first.id  # same state, a later step
    with torch.no_grad():
        model.weight.add_(1.0)
    assert ck.save(step=6, wait=True).id not in (first.id,)  # same step, trained further
    assert len(Store(str(tmp_path / "s")).list()) == 3
    ck.close()


def test_magic_save_says_nothing_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from ckpt_notebook.ui import session as session_mod

    monkeypatch.chdir(tmp_path)
    ip = ipython_shell()
    ip.reset(new_session=False)
    ip.run_line_magic("load_ext", "ckpt_notebook")
    try:
        ip.user_ns["model"] = torch.nn.Linear(2, 2)
        ip.run_line_magic("checkpoint", f"store {tmp_path / 's'}")
        ip.run_line_magic("checkpoint", "save --step 3")
        capsys.readouterr()
        said = f"{ip.run_line_magic('checkpoint', 'save --step 3')}{capsys.readouterr().out}"
        assert "nothing new" in said and "step 3" in said
        assert len(Store(str(tmp_path / "s")).list()) == 1
    finally:
        old = session_mod._SESSIONS.pop(id(ip), None)
        if old is not None:
            old.close()
        ip.reset(new_session=False)
