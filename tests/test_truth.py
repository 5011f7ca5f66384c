"""Every message is true: a restore says which run it came from and never claims what did
not happen; ``latest`` inside a Checkpointer means its own run's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import mlp
from kernels import Kernel

import ckpt_notebook as ckn
from ckpt_notebook.manager import resolve_ref


def _two_runs(store_dir: Path) -> tuple[ckn.CheckpointInfo, ckn.CheckpointInfo]:
    """runA saves at step 3 (loss 0.5), then runB, same architecture, at step 7 (loss 0.1)."""
    a = ckn.Checkpointer(store_dir, run="runA", model=mlp(seed=1), rng=False, async_save=False)
    info_a = a.save(step=3, metrics={"loss": 0.5})
    b = ckn.Checkpointer(store_dir, run="runB", model=mlp(seed=2), rng=False, async_save=False)
    info_b = b.save(step=7, metrics={"loss": 0.1})
    a.close()
    b.close()
    return info_a, info_b


def test_latest_inside_a_checkpointer_is_its_own_runs(store_dir: Path) -> None:
    info_a, _ = _two_runs(store_dir)
    model = mlp(seed=9)
    ckpt = ckn.Checkpointer(store_dir, run="runA", model=model, rng=False)
    report = ckpt.restore("latest")
    assert report.checkpoint.id == info_a.id
    assert torch.equal(model[0].weight, mlp(seed=1)[0].weight)
    assert str(report).splitlines()[0] == f"Restored {info_a.id} (run 'runA', step 3)"
    assert "run &#x27;runA&#x27;" in report._repr_html_()
    assert ckpt.resolve("best.loss").id == info_a.id


def test_any_run_needs_an_explicit_spelling(store_dir: Path) -> None:
    info_a, info_b = _two_runs(store_dir)
    ckpt = ckn.Checkpointer(store_dir, run="runA", model=mlp(seed=9), rng=False)
    assert ckpt.resolve("latest@any").id == info_b.id
    assert ckpt.resolve("best.loss@any").id == info_b.id
    assert ckpt.resolve("latest@runB").id == info_b.id
    assert ckpt.resolve("ckpt:best.loss:min@runA").id == info_a.id
    report = ckpt.restore("latest@any")
    assert str(report).splitlines()[0] == f"Restored {info_b.id} (run 'runB', step 7)"
    # without a run (the CLI, the dashboard) latest is the store's
    assert resolve_ref(ckpt.store, "latest").id == info_b.id


def test_a_run_with_no_checkpoints_says_so_and_names_the_way_out(store_dir: Path) -> None:
    _two_runs(store_dir)
    ckpt = ckn.Checkpointer(store_dir, run="runC", model=mlp(seed=9), rng=False)
    with pytest.raises(ckn.CheckpointNotFoundError, match=r"of run 'runC'.*latest@any"):
        ckpt.restore("latest")
    with pytest.raises(ckn.CheckpointNotFoundError, match=r"of run 'runC'.*best.loss@any"):
        ckpt.resolve("best.loss")


def test_pin_and_delete_latest_mean_the_own_runs(store_dir: Path) -> None:
    info_a, info_b = _two_runs(store_dir)
    ckpt = ckn.Checkpointer(store_dir, run="runA", model=mlp(seed=9), rng=False)
    assert ckpt.pin("latest").id == info_a.id
    assert info_a.id in ckpt.store.pins.ids() and info_b.id not in ckpt.store.pins.ids()
    assert ckpt.delete("latest", force=True).id == info_a.id
    assert [i.id for i in ckpt.store.list()] == [info_b.id]


# -- a restore that restored nothing never says "Restored" ---------------------------------
def _files_checkpoint(store_dir: Path, tmp_path: Path) -> ckn.CheckpointInfo:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "notes.txt").write_text("weights elsewhere\n")
    return ckn.copy(folder, "exported", to=str(store_dir))


def test_restoring_a_files_checkpoint_is_an_error_that_points_at_use(
        store_dir: Path, tmp_path: Path) -> None:
    _files_checkpoint(store_dir, tmp_path)
    ckpt = ckn.Checkpointer(store_dir, run="runA", model=mlp(), rng=False)
    with pytest.raises(ckn.RestoreError, match=r"'exported' is a files checkpoint.*use exported"):
        ckpt.restore("exported")


def test_percent_restore_of_a_files_checkpoint_says_use(store_dir: Path, tmp_path: Path) -> None:
    _files_checkpoint(store_dir, tmp_path)
    with Kernel(cwd=str(tmp_path)) as k:
        k.run(f"%load_ext ckpt_notebook\n%checkpoint store {store_dir}")
        reply, out = k.wait(k.start("%checkpoint restore exported"))
    assert reply["status"] == "error"
    assert "Restored" not in out
    assert "%checkpoint use exported" in reply["evalue"]


def test_a_non_strict_restore_that_matched_no_key_is_an_error(store_dir: Path) -> None:
    saver = ckn.Checkpointer(store_dir, run="r", rng=False, async_save=False,
                             model=torch.nn.Linear(3, 2))
    saver.save(step=1)
    other = torch.nn.Sequential(torch.nn.Linear(3, 2))  # same shapes, keys "0.weight", ...
    before = other[0].weight.detach().clone()
    ckpt = ckn.Checkpointer(store_dir, run="r", rng=False, model=other)
    with pytest.raises(ckn.RestoreError, match=r"matched no key of 'model'.*nothing was loaded"):
        ckpt.restore("latest", strict=False)
    assert torch.equal(other[0].weight, before)


def test_a_non_strict_weights_file_that_matched_no_key_is_an_error(tmp_path: Path,
                                                                  store_dir: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 3)}, str(path))
    ckpt = ckn.Checkpointer(store_dir, run="r", rng=False, model=torch.nn.Linear(3, 2))
    with pytest.raises(ckn.RestoreError, match="matched no key"):
        ckpt.restore(str(path), strict=False)


def test_the_dashboard_offers_use_for_a_files_checkpoint(store_dir: Path, tmp_path: Path) -> None:
    from ckpt_notebook.ui.dashboard.model import DashboardModel

    _files_checkpoint(store_dir, tmp_path)
    model = DashboardModel(store=str(store_dir))
    assert model.details("exported")["restore_line"] == "%checkpoint use exported"


# -- manual, interrupt and after-cell saves carry the step's metrics -----------------------
def test_a_manual_save_carries_the_metrics_step_recorded_for_that_step(store_dir: Path) -> None:
    ckpt = ckn.Checkpointer(store_dir, run="r", rng=False, async_save=False, model=mlp())
    ckpt.step(5, {"loss": 0.25})
    assert dict(ckpt.save(step=5).metrics) == {"loss": 0.25}
    assert dict(ckpt.save(step=5, metrics={"acc": 0.5}).metrics) == {"loss": 0.25, "acc": 0.5}
    assert dict(ckpt.save(step=6).metrics) == {}  # step 6 recorded nothing


def test_percent_save_after_a_loop_carries_its_metrics(tmp_path: Path, store_dir: Path) -> None:
    with Kernel(cwd=str(tmp_path)) as k:
        k.run(f"%load_ext ckpt_notebook\n%checkpoint store {store_dir}\n"
              "import torch, ckpt_notebook as ckn\nmodel = torch.nn.Linear(2, 2)\n"
              "for step in range(1, 4):\n    ckn.session().step(step, {'loss': 1.0 / step})\n")
        k.run("%checkpoint save")
    [info] = ckn.Store(store_dir).list()
    assert info.step == 3 and dict(info.metrics) == {"loss": pytest.approx(1 / 3)}


# -- a mistyped store is not silently accepted ----------------------------------------------
def test_cli_on_a_store_that_is_not_there_fails(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    from ckpt_notebook.cli import main

    missing = tmp_path / "nonexistent"
    for argv in (["ls"], ["ls", "--json"], ["request-save"], ["prune"]):
        assert main([*argv, "--store", str(missing)]) == 1, argv
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("ckpt: error: no store at"), err
        assert "nothing is there" in err and "--store" in err and err.count("\n") == 1
    assert not missing.exists()


def test_percent_store_says_when_nothing_is_there(tmp_path: Path) -> None:
    typo = tmp_path / "chekpoints"
    with Kernel(cwd=str(tmp_path)) as k:
        out = k.run(f"%load_ext ckpt_notebook\n%checkpoint store {typo}")
        assert f"nothing is at {typo}" in out and "--create" in out
        out = k.run(f"%checkpoint store {tmp_path / 'new'} --create")
    assert "nothing is at" not in out
    assert ckn.Store(tmp_path / "new").list() == [] and (tmp_path / "new").is_dir()
    assert not typo.exists()


# -- save requests expire -------------------------------------------------------------------
def test_an_expired_save_request_is_not_honoured(store_dir: Path) -> None:
    from ckpt_notebook.manager import request_save

    loop = ckn.Checkpointer(store_dir, run="r", rng=False, async_save=False, model=mlp())
    loop.save(step=0)
    request_save(loop.store, lifetime_s=0.0)  # made while no loop ran; its time is up
    assert loop.step(1) is None
    assert loop.store.requests.pending() == []  # dropped, not left for the next loop
    request_save(loop.store)
    loop._next_request_poll = 0.0
    assert loop.step(2) is not None  # a fresh one is honoured


def test_an_old_request_without_an_expiry_is_dropped(store_dir: Path) -> None:
    import json

    loop = ckn.Checkpointer(store_dir, run="r", rng=False, async_save=False, model=mlp())
    loop.save(step=0)
    (store_dir / "requests").mkdir(exist_ok=True)
    (store_dir / "requests" / "1-abcdef.json").write_text(json.dumps(
        {"id": "1-abcdef", "action": "save", "requested": "2020-01-01T00:00:00+00:00"}))
    assert loop.step(1) is None and loop.store.requests.pending() == []


def test_request_save_says_its_lifetime_and_whether_a_loop_took_it(
        capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    from ckpt_notebook.cli import main

    ckn.Checkpointer(store_dir, run="r", rng=False, async_save=False, model=mlp()).save(step=0)
    assert main(["request-save", "--lifetime", "90s", "--store", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert "expires at" in out and "(in 90 s)" in out
    assert main(["request-save", "--wait", "0.2", "--store", str(store_dir)]) == 0
    assert "no training loop took it within 0.2 s" in capsys.readouterr().out


# -- retention is per run by default --------------------------------------------------------
def _run_ck(ckpt_id: str, run: str, minute: int) -> ckn.CheckpointInfo:
    return ckn.CheckpointInfo(id=ckpt_id, run=run, step=minute,
                              created=f"2026-01-01T00:{minute:02d}:00+00:00")


def test_one_runs_new_checkpoints_never_make_anothers_prunable() -> None:
    from ckpt_notebook import retention

    infos = [_run_ck("a1", "runA", 1), _run_ck("a2", "runA", 2),
             _run_ck("b1", "runB", 3), _run_ck("b2", "runB", 4), _run_ck("b3", "runB", 5)]
    status = retention.statuses(infos, retention.Policy(keep_last=2))
    assert {i: s.kept for i, s in status.items()} == {
        "a1": True, "a2": True, "b1": False, "b2": True, "b3": True}
    assert status["a2"].label == "kept: latest 1/2 of run 'runA'"
    assert status["b3"].label == "kept: latest 1/2 of run 'runB'"
    store_wide = retention.Policy(keep_last=2, scope="store")
    assert [i.id for i in retention.prunable(infos, store_wide)] == ["a1", "a2", "b1"]
    assert store_wide.describe() == "keep last 2 (store-wide: across runs)"
    assert store_wide.to_json() == {"keep_last": 2, "scope": "store"}


def test_policy_scope_reads_from_old_and_new_policy_files() -> None:
    from ckpt_notebook import retention

    assert retention.Policy.from_json({"keep_last": 3}).scope == "run"  # an old policy.json
    assert retention.Policy.from_json({"keep_last": 3}).to_json() == {"keep_last": 3}
    assert retention.Policy.from_json({"keep_last": 3, "scope": "store"}).scope == "store"
    with pytest.raises(ValueError, match="scope"):
        retention.Policy(keep_last=1, scope="everything")  # type: ignore[arg-type]


def test_cli_policy_scope(capsys: pytest.CaptureFixture[str], store_dir: Path) -> None:
    from ckpt_notebook.cli import main

    ckn.Checkpointer(store_dir, run="r", rng=False, async_save=False, model=mlp()).save(step=1)
    assert main(["policy", "--keep-last", "2", "--scope", "store", "--store",
                 str(store_dir)]) == 0
    assert "store-wide" in capsys.readouterr().out
    assert ckn.Store(store_dir).policy.read() == {"keep_last": 2, "scope": "store"}
