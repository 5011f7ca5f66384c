"""The dashboard end to end: ``ckpt dashboard`` served on 127.0.0.1 in a subprocess, driven
by Debian's chromium through Playwright (``executable_path``; Playwright's own browser
downloads are not used). Screenshots go under each test's temp folder; the README's come from
``make screenshots`` (tests/screenshots.py), over the real quickstart notebook."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import pythonpath_env
from helpers.dashboard import Dashboard

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CKPT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
EVIL_TAG = "<img src=x onerror=window.__xss=1><b>bold</b>"
EVIL_METRIC = "<u>acc</u>"
EVIL_RUN = "<i>run</i>-a"
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="chromium is not installed (make browser installs it)")

SAVE_FROM_ANOTHER_PROCESS = """
import sys, torch
from ckpt_notebook import Checkpointer
ck = Checkpointer(sys.argv[1], run="live", model=torch.nn.Linear(4, 2), rng=False,
                  async_save=False)
ck.step(1, {"loss": 0.5})
print(ck.save(step=1, metrics={"loss": 0.5}, tags=["from-elsewhere"]).id, flush=True)
"""


def make_store(root: Path) -> list[str]:
    """Two runs with metric history, a tag and a metric name holding HTML, and a retention
    policy that makes some checkpoints prunable and one the kept best."""
    import torch

    from ckpt_notebook import Checkpointer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = []
    a = Checkpointer(root, run=EVIL_RUN, model=model, optimizer=opt, rng=False,
                     async_save=False)
    for step in range(1, 101):
        with torch.no_grad():
            model[0].weight.add_(0.001)
        loss = 1.0 / math.sqrt(step) + 0.02 * math.sin(step)
        metrics = {"loss": loss, EVIL_METRIC: 1 - loss / 2}
        a.step(step, metrics)
        if step % 20 == 0:
            tags = [EVIL_TAG] if step == 40 else ["warmup"] if step == 20 else []
            ids.append(a.save(step=step, metrics=metrics, tags=tags).id)
    a.history.flush(force=True)
    b = Checkpointer(root, run="run-b", model=model, rng=False, async_save=False)
    for step in range(1, 51):
        b.step(step, {"loss": 2.0 / math.sqrt(step)})
        if step % 25 == 0:
            ids.append(b.save(step=step, metrics={"loss": 2.0 / math.sqrt(step)}).id)
    b.history.flush(force=True)
    b.set_policy(keep_last=2, keep_best=1, monitor="loss")
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("dashboard") / "store"
    return root, make_store(root)


@pytest.fixture(scope="module")
def server(store: tuple[Path, list[str]]) -> Iterator[Dashboard]:
    srv = Dashboard(store[0])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def page(server: Dashboard) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update"])
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(WAIT_MS)
        pg.requested = []  # type: ignore[attr-defined]
        pg.errors = []  # type: ignore[attr-defined]
        pg.on("request", lambda r: pg.requested.append(r.url))
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        pg.goto(server.url)
        pg.wait_for_url(f"{server.origin}/")  # the token left the address bar for a cookie
        yield pg
        browser.close()


def row(page: Any, text: str) -> Any:
    """The main table's row holding ``text``."""
    return page.locator(".tabulator-row", has_text=text).first


def test_rows_plot_and_offline_resources(page: Any, server: Dashboard,
                                         store: tuple[Path, list[str]]) -> None:
    _, ids = store
    for ckpt in ids:
        row(page, ckpt).wait_for()
    assert "kept: best loss #1" in row(page, ids[4]).inner_text()
    assert "prunable" in row(page, ids[0]).inner_text()
    page.locator("canvas").first.wait_for()  # the metric plot (Bokeh draws on a canvas)
    page.get_by_text("prunable now:").wait_for()  # the storage summary, loaded after
    outside = [u for u in page.requested
               if not u.startswith((server.origin, "ws://127.0.0.1", "blob:", "data:"))]
    assert outside == [], "the page must work offline"
    assert page.errors == []


def test_user_strings_render_as_text(page: Any, store: tuple[Path, list[str]]) -> None:
    _, ids = store
    cell = row(page, ids[1]).locator(".tabulator-cell", has_text="onerror")
    assert cell.inner_text().strip() == EVIL_TAG
    assert page.evaluate("window.__xss") is None
    assert page.locator(".tabulator b").count() == 0  # no <b> element was made from the tag
    header = page.locator(".tabulator-col-title", has_text="acc").first
    assert header.inner_text().strip() == EVIL_METRIC
    assert page.locator(".tabulator-col-title u").count() == 0
    assert row(page, ids[0]).locator(".tabulator-cell", has_text="run").first.inner_text() \
        == EVIL_RUN
    # the same strings in the details pane
    row(page, ids[1]).click()
    page.get_by_text(f"tags: {EVIL_TAG}").wait_for()
    assert page.evaluate("window.__xss") is None


def test_filter_by_run_and_tag(page: Any, store: tuple[Path, list[str]]) -> None:
    _, ids = store
    selects = page.locator("select")
    run_select, tag_select = selects.nth(0), selects.nth(1)
    option = run_select.locator("option", has_text="run</i>")
    assert option.inner_text() == EVIL_RUN  # option labels are text too
    tag_select.select_option(label=EVIL_TAG)
    row(page, ids[0]).wait_for(state="detached")
    assert page.locator(".tabulator-row", has_text="2026").count() <= 1
    row(page, ids[1]).wait_for()
    tag_select.select_option(label="all tags")
    run_select.select_option(label="run-b")
    row(page, ids[1]).wait_for(state="detached")
    row(page, ids[5]).wait_for()
    run_select.select_option(label="all runs")
    row(page, ids[0]).wait_for()


def test_copy_to_a_named_checkpoint(page: Any, store: tuple[Path, list[str]]) -> None:
    _, ids = store
    row(page, ids[2]).click()
    page.locator("pre", has_text=f"run {EVIL_RUN}  step 60").first.wait_for()
    page.get_by_placeholder("e.g. baseline-v1").fill("baseline-v1")
    page.get_by_role("button", name="Copy to name").click()
    named = row(page, "baseline-v1")
    named.wait_for()
    assert "named (immutable)" in named.inner_text()
    page.locator(".notyf__toast", has_text="baseline-v1").first.wait_for()


def test_errors_are_notifications(page: Any, store: tuple[Path, list[str]]) -> None:
    _, ids = store
    row(page, ids[3]).click()
    page.get_by_placeholder("e.g. baseline-v1").fill("<b>no</b>")
    page.get_by_role("button", name="Copy to name").click()
    toast = page.locator(".notyf__toast", has_text="invalid checkpoint name").first
    toast.wait_for()
    assert "<b>no</b>" in toast.inner_text()  # quoted as text, not made bold
    assert "Traceback" not in page.content()
    page.get_by_placeholder("e.g. baseline-v1").fill("")


def test_pin_and_screenshot(page: Any, store: tuple[Path, list[str]], tmp_path: Path) -> None:
    _, ids = store
    row(page, ids[4]).click()
    page.get_by_role("button", name="Pin", exact=True).click()
    pinned = page.locator(".tabulator-row", has_text="kept: pinned").first
    pinned.wait_for()
    assert ids[4] in pinned.inner_text()
    page.get_by_role("button", name="Diff").click()  # against its parent
    page.get_by_text("1 tensors differ").wait_for()
    page.locator("canvas").first.wait_for()
    page.locator(".notyf__toast").last.wait_for(state="detached", timeout=WAIT_MS)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_verify_and_delete_with_confirmation(page: Any, store: tuple[Path, list[str]]) -> None:
    _, ids = store
    row(page, ids[0]).click()
    page.get_by_role("button", name="Verify").click()
    page.get_by_text("every blob verifies").first.wait_for()
    page.get_by_role("button", name="Delete...").click()
    page.get_by_text(f"Delete {ids[0]}?").wait_for()
    assert row(page, ids[0]).count() == 1  # nothing happens before the confirmation
    page.get_by_role("button", name="Yes, delete").click()
    row(page, ids[0]).wait_for(state="detached")
    # a named checkpoint: refused until "force" is ticked, as `ckpt delete --force`
    row(page, "baseline-v1").click()
    page.get_by_text("(named baseline-v1)").wait_for()
    page.get_by_role("button", name="Delete...").click()
    page.get_by_text("tick force to delete it anyway").wait_for()
    page.get_by_role("button", name="Yes, delete").click()
    page.locator(".notyf__toast", has_text="immutable").first.wait_for()
    assert row(page, "baseline-v1").count() == 1
    page.locator(".bk-Checkbox", has_text="force (named or pinned)").locator("input").check()
    page.get_by_role("button", name="Yes, delete").click()
    row(page, "baseline-v1").wait_for(state="detached")


def test_the_page_needs_its_token(page: Any, server: Dashboard) -> None:
    """A browser without the cookie (another local user's) that has the address but not the
    token: refused; the token URL followed from another page (a cross-site start, where a
    SameSite=Strict cookie set by an HTTP redirect would not be sent on) still logs in."""
    context = page.context.browser.new_context()  # no cookies
    try:
        pg = context.new_page()
        response = pg.goto(f"{server.origin}/")
        assert response is not None and response.status == 403
        assert "needs its token" in pg.content()
        pg.set_content(f"<a id=go href='{server.url}'>dashboard</a>")  # about:blank
        pg.click("#go")
        pg.wait_for_url(f"{server.origin}/")
        pg.locator(".tabulator-row").first.wait_for(timeout=WAIT_MS)
    finally:
        context.close()


FIND_MARKER_JS = """([title, ckpt]) => {
  const seen = new Set(), queue = [...Bokeh.index]
  while (queue.length) {
    const view = queue.shift()
    if (seen.has(view)) continue
    seen.add(view)
    const heading = view.model?.title?.text
    if (view.frame != null && typeof heading === "string" && heading.startsWith(title)) {
      for (const r of view.renderer_views.values()) {
        const data = r.model.data_source?.data
        const at = data?.id?.indexOf(ckpt) ?? -1
        const marker = r.model.glyph?.marker
        if (at < 0 || (marker?.value ?? marker) !== "circle") continue
        view.el.scrollIntoView({block: "center"})
        const box = view.canvas_view.el.getBoundingClientRect()
        return {x: box.left + view.frame.x_scale.compute(data.x[at]),
                y: box.top + view.frame.y_scale.compute(data.y[at]), canvas: box.top}
      }
    }
    for (const child of view.children()) queue.push(child)
  }
  return null
}"""


def marker_position(page: Any, metric: str, ckpt: str) -> dict[str, float]:
    """Where on the screen ``ckpt``'s marker is drawn on ``metric``'s plot (from BokehJS's
    own scales, so the test clicks what a user sees)."""
    page.wait_for_function(FIND_MARKER_JS, arg=[metric, ckpt])
    return page.evaluate(FIND_MARKER_JS, [metric, ckpt])  # type: ignore[no-any-return]


def test_one_plot_per_metric_and_a_marker_click_selects(page: Any,
                                                        store: tuple[Path, list[str]]) -> None:
    _, ids = store
    page.locator("select").nth(0).select_option(label=EVIL_RUN)
    row(page, ids[5]).wait_for(state="detached")
    chip = page.locator(".choices__item", has_text="run</i>").first  # the runs chooser
    chip.wait_for()
    assert chip.inner_text().startswith(EVIL_RUN) and page.locator(".choices i").count() == 0
    # two metrics of different scales: two plots, each with its own y axis
    other = marker_position(page, EVIL_METRIC, ids[2])
    at = marker_position(page, "loss", ids[2])
    assert at["canvas"] != other["canvas"] or at["x"] != other["x"]  # not the same canvas
    page.mouse.click(at["x"], at["y"])
    page.locator("pre", has_text=f"run {EVIL_RUN}  step 60").first.wait_for()
    selected = page.locator(".tabulator-row.tabulator-selected").first
    selected.wait_for()
    assert ids[2] in selected.inner_text()  # the table follows a selection made on a plot
    page.locator("select").nth(0).select_option(label="all runs")
    row(page, ids[5]).wait_for()


def test_a_failed_diff_replaces_the_result_next_to_the_button(page: Any,
                                                              store: tuple[Path, list[str]],
                                                              ) -> None:
    _, ids = store
    row(page, ids[3]).click()
    page.locator("pre", has_text=f"run {EVIL_RUN}  step 80").first.wait_for()
    diff_btn = page.get_by_role("button", name="Diff", exact=True)
    diff_btn.click()  # against its parent
    ok = page.locator(".ckpt-feedback-ok[data-for=diff]", has_text="tensors differ")
    ok.wait_for()
    page.get_by_placeholder("id, name, latest, best.loss").fill("no-such-checkpoint")
    diff_btn.click()
    error = page.locator(".ckpt-feedback-error[data-for=diff]")
    error.wait_for()
    assert "no-such-checkpoint" in error.inner_text()
    assert page.get_by_text("tensors differ").count() == 0  # the stale result is gone
    button_box, error_box = diff_btn.bounding_box(), error.bounding_box()
    assert 0 <= error_box["y"] - button_box["y"] < 120  # right under the button
    assert abs(error_box["x"] - button_box["x"]) < 600


def test_the_page_fits_a_notebook_wide_area(page: Any) -> None:
    page.set_viewport_size({"width": 1000, "height": 1000})
    try:
        page.get_by_role("button", name="Copy to name").wait_for()
        page.wait_for_timeout(500)  # let the flex rows settle
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px at 1000px"
        copy_box = page.get_by_role("button", name="Copy to name").bounding_box()
        assert copy_box["x"] + copy_box["width"] <= 1000  # not cut off
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


@pytest.mark.parametrize("width", [1600, 1920, 2560])
def test_prune_confirmation_is_clickable_with_a_checkpoint_selected(
        page: Any, store: tuple[Path, list[str]], width: int) -> None:
    _, ids = store
    page.set_viewport_size({"width": width, "height": 1100})
    try:
        row(page, ids[4]).click()
        page.locator("pre", has_text=f"run {EVIL_RUN}  step 100").first.wait_for()
        page.get_by_role("button", name="Prune now...").click()
        cancel = page.get_by_role("button", name="Cancel").last
        yes = page.get_by_role("button", name="Yes, prune now")
        yes.wait_for()
        # Playwright clicks only what is on top at the button's centre: a card laid over the
        # button would intercept the click and fail the test
        cancel.click(timeout=5000)
        yes.wait_for(state="hidden")
        page.get_by_role("button", name="Prune now...").click()
        if width != 2560:
            page.get_by_role("button", name="Cancel").last.click(timeout=5000)
            yes.wait_for(state="hidden")
            return
        yes.click(timeout=5000)
        done = page.locator(".ckpt-feedback-ok[data-for=storage]")
        done.wait_for()
        assert "removed" in done.inner_text() or "pruned" in done.inner_text()
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


def test_a_save_from_another_process_appears_live(page: Any, store: tuple[Path, list[str]],
                                                  ) -> None:
    root, _ = store
    proc = subprocess.run([sys.executable, "-c", SAVE_FROM_ANOTHER_PROCESS, str(root)],
                          capture_output=True, text=True, env=pythonpath_env(), timeout=120,
                          check=True)
    new_id = proc.stdout.split()[-1]
    saved = time.monotonic()
    row(page, new_id).wait_for()  # no reload: the watcher pushes it
    print(f"new checkpoint shown {time.monotonic() - saved:.2f}s after the saving "
          "process exited")
    assert "from-elsewhere" in row(page, new_id).inner_text()
