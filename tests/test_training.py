"""Checkpointer.step(): schedules, "save now" requests, metric history, retention after saves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import mlp

import ckpt_notebook as ckn
from ckpt_notebook.manager import request_save
from ckpt_notebook.manager.training import Schedule


def test_saves_every_n_steps_and_records_history(store_dir: Path) -> None:
    ckpt = ckn.Checkpointer(store_dir, run="exp1", model=mlp(), rng=False, every=10)
    saved = [ckpt.step(s, {"loss": 1.0 / s}) for s in range(1, 36)]
    ckpt.close()
    assert [i.step for i in saved if i is not None] == [10, 20, 30]
    infos = ckpt.store.list()
    assert [i.step for i in infos] == [10, 20, 30]
    assert infos[0].metrics == {"loss": pytest.approx(0.1)}
    rows = ckpt.store.history.read("exp1")
    assert [r["step"] for r in rows] == list(range(1, 36))
    assert rows[-1]["metrics"] == {"loss": pytest.approx(1 / 35)}
    assert ckpt.store.history.runs() == ["exp1"]


@pytest.mark.parametrize(("every", "steps", "seconds"), [
    (5, 5, None), ("5", 5, None), ("90s", None, 90.0), ("10min", None, 600.0), (None, None, None),
])
def test_schedule_parsing(every: object, steps: int | None, seconds: float | None) -> None:
    schedule = Schedule.parse(every)  # type: ignore[arg-type]
    assert (schedule.every_steps, schedule.every_seconds) == (steps, seconds)


@pytest.mark.parametrize(("bad", "message"), [
    (0, r"every=0: a step interval must be at least 1"),
    (-3, r"every=-3: a step interval must be at least 1"),
    ("soon", r"bad duration 'soon': use "),
    (True, r"every must be a number of steps or a duration like '10min'"),
])
def test_bad_schedules_are_refused(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule.parse(bad)  # type: ignore[arg-type]


def test_time_schedule(store_dir: Path) -> None:
    ckpt = ckn.Checkpointer(store_dir, model=mlp(), rng=False, every="1s")
    ckpt.schedule.last_time -= 2  # as if two seconds went by since the last save
    assert ckpt.step(1) is not None
    assert ckpt.step(2) is None


def test_request_is_honoured_once(store_dir: Path) -> None:
    ckpt = ckn.Checkpointer(store_dir, model=mlp(), rng=False)
    assert ckpt.step(1) is None
    request_save(ckpt.store, by="test")
    ckpt._next_request_poll = 0  # skip the one-second poll throttle
    info = ckpt.step(2)
    assert info is not None and "requested" in info.tags
    ckpt._next_request_poll = 0
    assert ckpt.step(3) is None
    assert ckpt.store.requests.pending() == []


def test_retention_runs_after_each_commit(store_dir: Path) -> None:
    model = mlp()
    ckpt = ckn.Checkpointer(store_dir, model=model, rng=False, every=1)
    ckpt.set_policy(keep_last=2)
    ckpt.save(name="baseline", wait=True)
    for s in range(1, 6):
        with torch.no_grad():
            model[0].weight.add_(1)
        ckpt.step(s, {"val_loss": float(s)})
    ckpt.wait()
    ids = {i.step: i for i in ckpt.store.list()}
    assert sorted(k for k in ids if k is not None) == [4, 5]
    assert ckpt.resolve("baseline").named  # named checkpoints are never pruned
    assert ckpt.verify() == []
    assert ckpt.last_prune is not None and ckpt.last_prune.gc is not None


def test_changed_tracks_in_place_updates(store_dir: Path) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = ckn.Checkpointer(store_dir, model=model, opt=opt, rng=False)
    ckpt.save(wait=True)
    assert not ckpt.changed()
    model(torch.randn(2, 16)).sum().backward()
    opt.step()
    assert ckpt.changed()
