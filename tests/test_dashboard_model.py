"""The dashboard without a browser: the param model (statuses, filters, rows, history,
details, diff, summary, actions as one-line outcomes), the views built over it, the store
watcher and ``serve``'s address handling."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import pythonpath_env, wait_until

from ckpt_notebook import Checkpointer, Store
from ckpt_notebook.storage.blobs import blob_path
from ckpt_notebook.ui.dashboard.model import DashboardModel, Outcome

TAG = "<b>x</b>"


# -- fixtures ---------------------------------------------------------------------------------
def _train(root: Path | str) -> dict[str, str]:
    """Run ``a`` saves at steps 10..40 (loss 0.5, 0.2, 0.4, 0.3), run ``b`` once at step 5;
    policy (store-wide): keep the newest and the best by loss. Returns ids by ``run/step``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 512))  # a 1 MiB weight, never changed
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = {}
    a = Checkpointer(root, run="a", model=model, optimizer=opt, rng=False, async_save=False)
    losses = {10: 0.5, 20: 0.2, 30: 0.4, 40: 0.3}
    for step in range(1, 41):
        a.step(step, {"loss": 1.0 / step})
        if step in losses:
            with torch.no_grad():
                model[0].weight.add_(0.01)  # the first layer changes; the last one does not
            tags = ["good"] if step == 20 else [TAG] if step == 40 else []
            ids[f"a/{step}"] = a.save(step=step, metrics={"loss": losses[step]}, tags=tags).id
    a.history.flush(force=True)
    b = Checkpointer(root, run="b", model=model, rng=False, async_save=False)
    ids["b/5"] = b.save(step=5, metrics={"loss": 0.9}, tags=["other"]).id
    # store-wide on purpose (issue 13: retention is per run unless chosen so): run b's one
    # save leaves a's newest prunable, which the status and prune tests below rely on
    b.set_policy(keep_last=1, keep_best=1, monitor="loss", scope="store")
    return ids


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("dash-template") / "store"
    return root, _train(root)


@pytest.fixture
def store(template: tuple[Path, dict[str, str]], tmp_path: Path) -> Path:
    dest = tmp_path / "store"
    shutil.copytree(template[0], dest)
    return dest


@pytest.fixture
def ids(template: tuple[Path, dict[str, str]]) -> dict[str, str]:
    return dict(template[1])


@pytest.fixture
def model(store: Path) -> DashboardModel:
    return DashboardModel(str(store))


def by_id(model: DashboardModel) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in model.rows()}


def assert_failed(outcome: Outcome, *fragments: str) -> None:
    assert outcome.ok is False
    assert "\n" not in outcome.message and "Traceback" not in outcome.message
    for fragment in fragments:
        assert fragment in outcome.message


# -- the table --------------------------------------------------------------------------------
def test_statuses(model: DashboardModel, ids: dict[str, str]) -> None:
    rows = by_id(model)
    assert rows[ids["b/5"]]["status"].startswith("kept: latest")
    assert rows[ids["a/20"]]["status"] == "kept: best loss #1"
    for key in ("a/10", "a/30", "a/40"):
        assert rows[ids[key]]["status"] == "prunable"
    assert model.status_error == ""


def test_rows_newest_first_with_columns(model: DashboardModel, ids: dict[str, str]) -> None:
    rows = model.rows()
    assert [r["id"] for r in rows] == [ids[k] for k in ("b/5", "a/40", "a/30", "a/20",
                                                         "a/10")]
    first = rows[1]
    assert first["run"] == "a" and first["step"] == 40 and first["metric: loss"] == 0.3
    assert first["tags"] == TAG  # raw: the views escape, the model keeps what users wrote
    assert first["size"].endswith("B") and first["new"].endswith("B")
    assert first["pinned"] is False and first["verified"] == "" and first["kind"] == "state"
    assert model.metric_names == ["loss"]
    assert model.runs == ["a", "b"]
    assert model.tags == sorted(["good", TAG, "other"])


def test_filters(model: DashboardModel, ids: dict[str, str]) -> None:
    model.run_filter = "b"
    assert [r["id"] for r in model.rows()] == [ids["b/5"]]
    model.run_filter = "a"
    model.tag_filter = "good"
    assert [r["id"] for r in model.rows()] == [ids["a/20"]]
    model.run_filter = ""
    model.tag_filter = TAG
    assert [r["id"] for r in model.rows()] == [ids["a/40"]]
    model.tag_filter = "no-such-tag"
    assert model.rows() == []


# -- plots, details, diff, summary ---------------------------------------------------------------
def test_history_marks_checkpoints_and_best(model: DashboardModel, ids: dict[str, str]) -> None:
    hist = model.history("a")
    xs, ys = hist["series"]["loss"]
    assert xs == list(range(1, 41)) and ys[0] == 1.0
    marks = {m["id"]: m for m in hist["checkpoints"]}
    assert set(marks) == {ids[f"a/{s}"] for s in (10, 20, 30, 40)}
    assert marks[ids["a/20"]]["kept_best"] and marks[ids["a/20"]]["best_of"] == ["loss"]
    assert not marks[ids["a/30"]]["kept_best"] and marks[ids["a/30"]]["best_of"] == []
    assert model.history("b")["series"] == {}  # saved without step(): no history


def test_plot_data_one_entry_per_metric_with_a_line_per_run(model: DashboardModel,
                                                            ids: dict[str, str]) -> None:
    assert model.plotted_runs() == ["b"]  # the newest run by default
    model.plot_runs = ["a", "b"]
    data = model.plot_data()
    assert list(data) == ["loss"]  # each metric gets its own plot (its own y axis)
    lines = data["loss"]["lines"]
    assert sorted(lines) == ["a", "b"]  # runs side by side on one plot
    assert lines["a"]["x"] == list(range(1, 41)) and lines["a"]["y"][0] == 1.0
    assert lines["b"] == {"x": [5.0], "y": [0.9], "raw": [0.9], "step": [5]}  # from its save
    marks = data["loss"]["marks"]
    by_ckpt = dict(zip(marks["id"], zip(marks["x"], marks["y"], marks["best"], strict=True),
                       strict=True))
    assert by_ckpt[ids["a/20"]] == (20.0, 0.2, True)  # the kept-best one
    assert by_ckpt[ids["a/30"]] == (30.0, 0.4, False) and by_ckpt[ids["b/5"]][:2] == (5.0, 0.9)
    model.run_filter = "a"  # the plots follow the run filter
    assert model.plotted_runs() == ["a"] and list(model.plot_data()["loss"]["lines"]) == ["a"]


def test_plot_data_wall_clock_smoothing_and_log(model: DashboardModel, ids: dict[str, str],
                                                ) -> None:
    from ckpt_notebook.ui.dashboard.series import smooth, to_ms

    model.plot_runs = ["a"]
    model.x_axis = "time"
    loss = model.plot_data()["loss"]
    xs = loss["lines"]["a"]["x"]
    assert xs == sorted(xs) and xs[0] > 1.6e12  # epoch milliseconds (a datetime axis)
    info = next(i for i in model.infos if i.id == ids["a/20"])
    assert loss["marks"]["x"][loss["marks"]["id"].index(ids["a/20"])] == to_ms(info.created)
    model.x_axis = "step"
    model.smoothing = 0.9
    line = model.plot_data()["loss"]["lines"]["a"]
    assert line["raw"][:2] == [1.0, 0.5] and line["y"][0] == 1.0  # debiased: starts at 1.0
    assert line["y"][1] == pytest.approx((0.9 * 0.1 * 1.0 + 0.1 * 0.5) / (1 - 0.9 ** 2))
    assert smooth([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError):
        model.smoothing = 1.5  # bounded
    model.smoothing = 0.0
    model.store.history.write_segment("a", "neg", [
        {"step": 41, "time": time.time(), "metrics": {"loss": -1.0}}])
    model.log_scale = True
    loss = model.plot_data()["loss"]
    assert loss["dropped"] == 1 and min(loss["lines"]["a"]["y"]) > 0  # a log axis has no <= 0
    model.log_scale = False
    assert model.plot_data()["loss"]["dropped"] == 0


def test_select_from_a_plot(model: DashboardModel, ids: dict[str, str]) -> None:
    assert model.select(ids["a/30"]) and model.selected == ids["a/30"]
    assert not model.select("20990101-000000-gone00") and model.selected == ids["a/30"]


def test_details(model: DashboardModel, ids: dict[str, str]) -> None:
    d = model.details(ids["a/20"])
    objects = {o["object"]: o for o in d["objects"]}
    assert objects["model"]["tensors"] == 4 and objects["model"]["dtypes"] == "F32"
    assert objects["model"]["kind"] == "module"
    assert "optimizer" in objects
    assert d["info"]["tags"] == ["good"] and d["info"]["run"] == "a"
    assert "torch" in d["library_versions"]
    assert d["restore_line"] == f"%checkpoint restore {ids['a/20']}"
    assert d["files"] == []


def test_diff(model: DashboardModel, ids: dict[str, str]) -> None:
    d = model.diff(ids["a/10"], ids["a/20"])
    changed = {(c["object"], c["tensor"]) for c in d["changes"]}
    assert ("model", "0.weight") in changed
    assert ("model", "2.weight") not in changed and d["same"] >= 3
    assert model.diff(ids["a/10"], ids["a/10"])["changes"] == []


def test_summary(model: DashboardModel) -> None:
    s = model.summary()
    assert s.checkpoints == 5
    assert s.logical_bytes == sum(i.logical_bytes for i in model.infos)
    assert 0 < s.stored_bytes < s.logical_bytes and s.dedup_ratio > 1
    assert s.prunable_checkpoints == 3 and s.prunable_bytes > 0


# -- actions ----------------------------------------------------------------------------------
def test_copy_to_a_named_checkpoint(model: DashboardModel, ids: dict[str, str],
                                    tmp_path: Path) -> None:
    version = model.version
    seen: list[tuple[int, int]] = []
    out = model.copy(ids["a/20"], " best-v1 ", progress=lambda d, t: seen.append((d, t)))
    assert out.ok, out.message
    assert "best-v1" in out.message
    assert by_id(model)["best-v1"]["status"] == "named (immutable)"
    assert model.version > version
    again = model.copy(ids["a/30"], "best-v1")
    assert_failed(again, "already exists")
    assert_failed(model.copy(ids["a/30"], "bad name!"), "invalid checkpoint name")
    assert_failed(model.copy("nope-nope", "x1"), "nope-nope")
    elsewhere = tmp_path / "elsewhere"
    out = model.copy(ids["a/20"], "shared", str(elsewhere))
    assert out.ok, out.message
    assert Store(str(elsewhere)).exists("shared") and not model.store.exists("shared")


def test_pin_and_unpin(model: DashboardModel, ids: dict[str, str]) -> None:
    ckpt = ids["a/10"]
    assert model.pin(ckpt).ok
    row = by_id(model)[ckpt]
    assert row["pinned"] is True and row["status"].startswith("kept: pinned")
    assert model.unpin(ckpt).ok
    assert by_id(model)[ckpt]["status"] == "prunable"
    assert_failed(model.pin("no-such-checkpoint"), "no-such-checkpoint")


def test_delete(model: DashboardModel, ids: dict[str, str]) -> None:
    ckpt = ids["a/30"]
    model.selected = ckpt
    out = model.delete(ckpt)
    assert out.ok, out.message
    assert ckpt not in by_id(model) and model.selected == ""
    assert model.copy(ids["a/20"], "keeper").ok
    assert_failed(model.delete("keeper"), "named", "immutable")
    assert "keeper" in by_id(model)
    assert_failed(model.delete(ckpt), ckpt)


def test_verify(model: DashboardModel, ids: dict[str, str], store: Path) -> None:
    good, bad = ids["a/20"], ids["b/5"]
    assert model.verify(good).ok
    doc = model.store.manifest(bad)
    digest = max(doc.blobs, key=lambda d: doc.blobs[d])
    blob = store / blob_path(digest)
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert_failed(model.verify(bad), bad)
    rows = by_id(model)
    assert rows[good]["verified"] == "ok" and rows[bad]["verified"] == "FAILED"


def test_prune_preview_and_prune(model: DashboardModel, ids: dict[str, str]) -> None:
    preview = model.prune_preview()
    assert preview.ok and preview.message.startswith("would remove 3 checkpoint(s)")
    assert len(model.rows()) == 5
    out = model.prune()
    assert out.ok and out.message.startswith("removed 3 checkpoint(s)")
    assert {r["id"] for r in model.rows()} == {ids["a/20"], ids["b/5"]}
    assert model.prune_preview().message == "nothing to prune"


def test_request_save(model: DashboardModel) -> None:
    out = model.request_save()
    assert out.ok and "next step()" in out.message
    assert len(model.store.requests.pending()) == 1


def test_the_page_says_whether_a_loop_took_the_request(model: DashboardModel) -> None:
    """Issue 13: the UI says whether a loop took a save request, or it expired unsaved."""
    import threading

    assert model.request_save().ok
    waiting = threading.Thread(target=lambda: setattr(model, "_taken", model.request_taken(
        poll_s=0.05)))
    waiting.start()
    model.store.requests.take("save")  # a training loop's step()
    waiting.join(10)
    taken = model._taken  # type: ignore[attr-defined]
    assert taken.ok and "a training loop took the save request" in taken.message
    model.last_request = model.store.requests.put("save", lifetime_s=0.0)
    expired = model.request_taken(poll_s=0.05)
    assert not expired.ok and "expired unsaved" in expired.message


def test_refresh_sees_other_writers(model: DashboardModel, store: Path) -> None:
    assert model.refresh() is False
    version = model.version
    Checkpointer(str(store), run="c", model=torch.nn.Linear(2, 2), rng=False,
                 async_save=False).save(step=1)
    assert model.refresh() is True and model.version == version + 1
    assert "c" in model.runs


def test_unexpected_errors_are_one_line_outcomes(model: DashboardModel,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_notebook.manager import maintenance

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr(maintenance, "pin", boom)
    assert_failed(model.pin("x"), "RuntimeError: boom")


def test_broken_policy_still_lists(model: DashboardModel, store: Path) -> None:
    (store / "policy.json").write_text('{"keep_last": -1}')
    model.refresh()
    assert model.status_error and len(model.rows()) == 5
    assert all(r["status"] == "" for r in model.rows())


# -- views (no browser) --------------------------------------------------------------------------
class Notes:
    """Stands in for pn.state.notifications."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def success(self, message: str, duration: int = 0) -> None:
        self.sent.append(("success", message))

    def error(self, message: str, duration: int = 0) -> None:
        self.sent.append(("error", message))


def test_view_renders_the_model_escaped(model: DashboardModel, ids: dict[str, str]) -> None:
    from ckpt_notebook.ui.dashboard.views import DashboardView

    notes = Notes()
    view = DashboardView(model, notifications=notes)
    df = view.table.value
    assert list(df["id"]) == [r["id"] for r in model.rows()]
    assert df["size"].dtype.kind in "iuf"  # numbers, so the column sorts by size
    model.run_filter = "b"
    assert list(view.table.value["id"]) == [ids["b/5"]]
    assert list(view.metrics.runs.value) == ["b"] and list(view.metrics.plots) == ["loss"]
    model.run_filter = ""
    model.selected = ids["a/40"]
    assert "&lt;b&gt;x&lt;/b&gt;" in view.details.object and TAG not in view.details.object
    assert view.restore_line.value == f"%checkpoint restore {ids['a/40']}"
    assert view.compare.value == ids["a/30"]  # its parent, ready to diff
    view._on_diff()
    assert "tensors differ" in view.diff_note.text and view.diff_note.kind == "ok"
    view.copy_name.value = "<i>bad</i>"
    view._on_copy()
    wait_until(lambda: notes.sent)
    kind, message = notes.sent[-1]
    assert kind == "error" and "&lt;i&gt;bad&lt;/i&gt;" in message and "<i>" not in message
    assert "&lt;i&gt;" in view.copy_note.pane.object and "<i>" not in view.copy_note.pane.object


def test_feedback_is_next_to_the_action_and_replaces_stale_results(
        model: DashboardModel, ids: dict[str, str]) -> None:
    from ckpt_notebook.ui.dashboard.views import DashboardView

    view = DashboardView(model, notifications=Notes())
    model.selected = ids["a/40"]
    view._on_diff()  # against its parent
    assert view.diff_note.kind == "ok" and len(view.diff_table.objects) == 1
    view.compare.value = "no-such-checkpoint"
    view._on_diff()
    assert view.diff_note.kind == "error" and "no-such-checkpoint" in view.diff_note.text
    assert view.diff_table.objects == []  # the last result is gone, not left on show
    assert view.actions_note.kind == "" and view.copy_note.kind == ""  # only the diff's
    view._on_pin()
    assert view.actions_note.kind == "ok" and "pinned" in view.actions_note.text
    model.selected = ids["a/30"]  # another checkpoint: the old outcomes are stale
    assert view.actions_note.kind == "" and view.diff_note.kind == ""
    assert view.compare.value == ids["a/20"]  # and it diffs against its own parent
    view._on_prune_ask()
    assert view.prune_confirm.visible and "Remove" in view.prune_question.object
    view._on_prune()
    assert wait_until(lambda: view.storage_note.kind == "ok")
    assert "removed" in view.storage_note.text or "pruned" in view.storage_note.text


def test_plots_one_per_metric_and_a_marker_click_selects(store: Path, ids: dict[str, str],
                                                         ) -> None:
    from bokeh.models import Scatter, TapTool

    from ckpt_notebook.ui.dashboard.views import DashboardView

    Store(str(store)).pins.add(ids["a/30"])  # kept through the prune after the next save
    Checkpointer(str(store), run="c", model=torch.nn.Linear(2, 2), rng=False,
                 async_save=False).save(step=3, metrics={"loss": 0.6, "acc": 0.7})
    model = DashboardModel(str(store))
    view = DashboardView(model)
    model.plot_runs = ["a", "c"]
    assert sorted(view.metrics.plots) == ["acc", "loss"]  # loss and accuracy: two plots
    loss = view.metrics.plots["loss"]
    assert sorted(loss.lines) == ["a", "c"]  # runs side by side
    assert loss.colors["a"] != loss.colors["c"]
    assert any(isinstance(t, TapTool) for t in loss.figure.tools)
    stars = [r for r in loss.figure.renderers
             if isinstance(r.glyph, Scatter) and r.glyph.marker == "star"]
    assert len(stars) == 1 and stars[0].data_source.data["id"] == [ids["a/20"]]
    # a click on a marker (what the TapTool does in the page) selects its checkpoint
    at = loss.marks.data["id"].index(ids["a/30"])
    loss.marks.selected.indices = [at]
    assert model.selected == ids["a/30"]
    assert loss.ring.data["x"] == [30.0]  # the selected checkpoint is ringed on the plot
    assert view.table.selection == [list(view.table.value["id"]).index(ids["a/30"])]
    model.x_axis = "time"
    assert view.metrics.plots["loss"] is not loss  # a datetime axis needs a new figure
    assert type(view.metrics.plots["loss"].figure.below[0]).__name__ == "DatetimeAxis"
    model.log_scale = True
    assert view.metrics.plots["loss"].figure.y_scale.__class__.__name__ == "LogScale"


def test_view_copy_runs_in_the_background(model: DashboardModel, ids: dict[str, str]) -> None:
    from ckpt_notebook.ui.dashboard.views import DashboardView

    notes = Notes()
    view = DashboardView(model, notifications=notes)
    model.selected = ids["a/20"]
    view.copy_name.value = "from-view"
    view._on_copy()
    assert wait_until(lambda: "from-view" in set(view.table.value["id"]))
    assert wait_until(lambda: notes.sent) and notes.sent[-1][0] == "success"
    assert view.copy_btn.disabled is False and view.copy_progress.visible is False


def test_metric_plot_marks_checkpoints_and_best(model: DashboardModel) -> None:
    from bokeh.models import Scatter

    from ckpt_notebook.ui.dashboard.plots import MetricPlot

    plot = MetricPlot("loss", model.plot_data(["a"])["loss"], ["a"])
    markers = [r.glyph.marker for r in plot.figure.renderers if isinstance(r.glyph, Scatter)]
    assert "star" in markers  # the kept-best checkpoint
    sizes = sorted(len(r.data_source.data["x"]) for r in plot.figure.renderers
                   if isinstance(r.glyph, Scatter))
    assert sizes == [0, 1, 4]  # no selection ring, one best, four saved


def test_summary_loads_in_the_background(model: DashboardModel) -> None:
    from ckpt_notebook.ui.dashboard.views import DashboardView

    view = DashboardView(model)
    view.refresh_summary()
    assert wait_until(lambda: "prunable now: 3 checkpoints" in view.summary.object)


# -- live updates -----------------------------------------------------------------------------
def test_watcher_sees_a_local_save(store: Path) -> None:
    from ckpt_notebook.ui.dashboard.app import StoreWatcher

    events: list[set[str]] = []
    watcher = StoreWatcher(Store(str(store)))
    watcher.subscribe(lambda kinds: events.append(set(kinds)))
    ck = Checkpointer(str(store), run="live", model=torch.nn.Linear(2, 2), rng=False,
                      async_save=False)
    try:
        assert wait_until(lambda: events)  # the watcher's first look
        for step in range(20):  # a save made before the watch began is not an event: retry
            events.clear()
            ck.save(step=step)
            if wait_until(lambda: any("checkpoints" in e for e in events), timeout=1.0):
                break
        assert any("checkpoints" in e for e in events)
    finally:
        watcher.stop()


def test_watcher_waits_for_a_store_to_be_created(tmp_path: Path) -> None:
    from ckpt_notebook.ui.dashboard.app import StoreWatcher

    root = tmp_path / "not-yet"
    model = DashboardModel(str(root))
    assert model.rows() == [] and not root.exists()  # showing a store does not create it
    events: list[set[str]] = []
    watcher = StoreWatcher(Store(str(root)), interval=0.05)
    watcher.subscribe(lambda kinds: events.append(set(kinds)))
    try:
        Checkpointer(str(root), run="new", model=torch.nn.Linear(2, 2), rng=False,
                     async_save=False).save(step=1)
        assert wait_until(lambda: any("checkpoints" in e for e in events))
        assert model.refresh() and len(model.rows()) == 1
    finally:
        watcher.stop()


def test_watcher_polls_remote_stores() -> None:
    from ckpt_notebook.ui.dashboard.app import StoreWatcher

    url = f"memory://dash-{uuid.uuid4().hex}"
    events: list[set[str]] = []
    watcher = StoreWatcher(Store(url), interval=0.05)
    watcher.subscribe(lambda kinds: events.append(set(kinds)))
    try:
        assert wait_until(lambda: events)  # the first poll
        events.clear()
        Store(url).pins.add("some-id")
        assert wait_until(lambda: any("checkpoints" in e for e in events))
    finally:
        watcher.stop()


def test_view_follows_store_changes(model: DashboardModel, store: Path) -> None:
    from ckpt_notebook.ui.dashboard.views import DashboardView

    view = DashboardView(model)
    info = Checkpointer(str(store), run="a", model=torch.nn.Linear(2, 2), rng=False,
                        async_save=False).save(step=50)
    threading.Thread(target=view.on_store_change, args=({"checkpoints"},)).start()
    assert wait_until(lambda: info.id in set(view.table.value["id"]))


def test_plot_follows_new_history_in_place(model: DashboardModel) -> None:
    from ckpt_notebook.ui.dashboard.views import DashboardView

    view = DashboardView(model)
    model.run_filter = "a"
    plot = view.metrics.plots["loss"]
    assert len(plot.lines["a"].data["x"]) == 40
    model.store.history.write_segment("a", "later", [
        {"step": s, "time": time.time() + s, "metrics": {"loss": 0.01}} for s in range(41, 51)])
    view.on_store_change({"history"})
    assert view.metrics.plots["loss"] is plot  # the same figure, new data (zoom kept)
    assert plot.lines["a"].data["x"][-1] == 50
    model.smoothing = 0.5  # a faint raw line appears: a new figure
    assert view.metrics.plots["loss"] is not plot


# -- serving ----------------------------------------------------------------------------------
def test_serve_binds_loopback_and_serves_the_page(store: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from ckpt_notebook.ui.dashboard import app

    port = app.free_port()
    server = app.serve(str(store), port=port, threaded=True)
    try:
        out = capsys.readouterr()
        assert f"at {server.url} " in out.out and "WARNING" not in out.err
        assert server.url.startswith(f"http://127.0.0.1:{port}/?token=")
        assert _get(f"http://127.0.0.1:{port}/") is None  # 403 without the token
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        assert _get(server.url, browser)  # sets the cookie
        body = _get(f"http://127.0.0.1:{port}/", browser)
        assert body and "ckpt dashboard" in body and "bokeh" in body
    finally:
        server.stop()
    assert not server.is_alive()


def _get(url: str, opener: urllib.request.OpenerDirector | None = None) -> str | None:
    try:
        with (opener or urllib.request.build_opener()).open(url, timeout=30) as response:
            return response.read().decode()
    except OSError:
        return None


def serve_unbound(store: Path, address: str, monkeypatch: pytest.MonkeyPatch
                  ) -> tuple[dict[str, Any], list[Any], str]:
    """``serve(threaded=True)`` on ``address`` as it really runs, up to the Bokeh server,
    which is a stand-in that binds nothing (a test must not open a port to other machines):
    returns what ``serve`` passed to ``pn.serve``, the gates added, and what it printed."""
    import panel as pn

    from ckpt_notebook.ui.dashboard import app

    calls: list[dict[str, Any]] = []
    gated: list[Any] = []

    class Fake:  # a Bokeh server that takes no requests
        _tornado = SimpleNamespace(add_handlers=lambda *a: gated.append(a))
        io_loop = SimpleNamespace(start=lambda: None)

        def start(self) -> None:
            pass
    monkeypatch.setattr(pn, "serve", lambda *a, **k: calls.append(k) or Fake())
    thread = app.serve(str(store), port=5999, address=address, threaded=True)
    thread.join(10)
    assert len(calls) == 1 and not thread.is_alive()
    return calls[0], gated, thread.url


def test_other_addresses_warn(store: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_notebook.ui.dashboard import app

    served, gated, _ = serve_unbound(store, "0.0.0.0", monkeypatch)
    err = capsys.readouterr().err
    assert "WARNING" in err and "0.0.0.0" in err and "other machines" in err
    assert served["address"] == "0.0.0.0" and "localhost:5999" in served["websocket_origin"]
    assert served["start"] is False and served["show"] is False and len(gated) == 1
    assert app.is_loopback("127.0.0.1") and app.is_loopback("::1")
    assert app.is_loopback("localhost") and not app.is_loopback("0.0.0.0")
    assert app._origins("127.0.0.1", 80) == ["127.0.0.1:80", "localhost:80"]


HOST = socket.gethostname()


@pytest.mark.parametrize(("address", "elsewhere"), [
    ("127.0.0.1", False), ("127.0.0.53", False), ("::1", False), ("localhost", False),
    ("0.0.0.0", True), ("::", True), ("192.0.2.7", True), ("2001:db8::7", True),
    ("dashboard.example", True),
])
def test_an_address_other_machines_reach_warns(store: Path, address: str, elsewhere: bool,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """serve() decides from the address alone whether other machines can reach it: if so it
    warns, and requests may address it by this machine's names; if not, by loopback only."""
    served, _, url = serve_unbound(store, address, monkeypatch)
    out = capsys.readouterr()
    assert ("other machines" in out.err) is elsewhere, out.err
    assert (f"bound to {address}, not 127.0.0.1" in out.err) is elsewhere
    origins = served["websocket_origin"]
    assert {"127.0.0.1:5999", "localhost:5999"} <= set(origins)
    if HOST != "localhost":
        assert (f"{HOST}:5999" in origins) is elsewhere, origins
    if not elsewhere:
        bound = f"[{address}]" if ":" in address else address
        assert set(origins) == {"127.0.0.1:5999", "localhost:5999", f"{bound}:5999"}
    every = address in ("0.0.0.0", "::")
    assert ("(bound to all addresses)" in out.out) is every
    if every:  # the URL printed names this machine, as other machines can reach it
        assert url.startswith(f"http://{HOST}:5999/")


def test_main_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_notebook.ui.dashboard import app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(app, "serve", lambda store, **kw: seen.update(store=store, **kw))
    assert app.main(["--store", "s3://b/p", "--port", "8123", "--show"]) == 0
    token = seen.pop("token")
    assert seen == {"store": "s3://b/p", "port": 8123, "address": "127.0.0.1", "show": True}
    assert isinstance(token, str) and len(token) >= 40


def test_inline_returns_a_panel(store: Path) -> None:
    import panel as pn

    from ckpt_notebook.ui.dashboard import inline

    page = inline(str(store))
    assert isinstance(page, pn.viewable.Viewable)
    assert page.dashboard_view.model.store.url == Store(str(store)).url


def test_importing_the_package_does_not_import_panel() -> None:
    code = ("import sys, ckpt_notebook.ui.dashboard as d; d.DashboardModel; "
            "print('panel' in sys.modules, 'bokeh' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=pythonpath_env(), check=True).stdout
    assert out.split() == ["False", "False"]
