"""``%checkpoint dashboard`` in a real JupyterLab notebook with no network: chromium (Debian's,
through Playwright) refuses every request that does not go to 127.0.0.1, a real kernel runs
the cell, and the dashboard must render from what the output itself carries (Panel's inline
resources; see ``app._extension``), never from cdn.bokeh.org, cdn.holoviz.org or jsdelivr."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")
from helpers.lab import CHROMIUM, JupyterLab, chromium, offline

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="chromium is not installed (make browser installs it)")
WAIT_MS = 120_000  # a cold kernel, torch and panel imports, 3.6 MB of inline JS on 2 cores
CELL_WIDTH_VIEWPORT = 1000
CDNS = ("cdn.bokeh.org", "cdn.holoviz.org", "cdn.jsdelivr.net", "unpkg.com")


def _store(root: Path) -> list[str]:
    import torch

    from ckpt_notebook import Checkpointer

    ck = Checkpointer(root / "checkpoints", run="offline", model=torch.nn.Linear(4, 2),
                      rng=False, async_save=False)
    ids = []
    for step in range(1, 31):
        ck.step(step, {"loss": 1.0 / step, "accuracy": 1 - 1.0 / (step + 1)})
        if step % 10 == 0:
            ids.append(ck.save(step=step, metrics={"loss": 1.0 / step}).id)
    ck.history.flush(force=True)
    return ids


def _notebook(path: Path) -> None:
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": ["%load_ext ckpt_notebook\n", "%checkpoint dashboard"]}
    path.write_text(json.dumps({
        "cells": [cell], "metadata": {"kernelspec": {"name": "python3",
                                                     "display_name": "Python 3",
                                                     "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))


def test_the_dashboard_renders_in_a_notebook_with_no_network(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    root.mkdir()
    ids = _store(root)
    _notebook(root / "dash.ipynb")
    refused: list[str] = []
    errors: list[str] = []
    with JupyterLab(root) as lab, chromium() as browser:
        page = browser.new_page(viewport={"width": CELL_WIDTH_VIEWPORT, "height": 1100})
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda e: errors.append(str(e)))
        offline(page, refused)
        page.goto(lab.url("lab/tree/dash.ipynb"))
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        page.wait_for_function("() => window.jupyterapp?.shell?.currentWidget?.sessionContext"
                               "?.session?.kernel?.status === 'idle'")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        output = page.locator(".jp-OutputArea-output").filter(
            has=page.locator(".tabulator-row")).first
        for ckpt in ids:
            output.locator(".tabulator-row", has_text=ckpt).first.wait_for()
        output.locator("canvas").first.wait_for()  # the metric plots drew
        output.get_by_role("button", name="Copy to name").wait_for()
        page.wait_for_timeout(500)
        shot = tmp_path / "dashboard-offline-notebook.png"
        page.screenshot(path=str(shot), full_page=True)
        widths: dict[str, Any] = output.evaluate(
            "el => ({scroll: el.scrollWidth, client: el.clientWidth})")
        copy = output.get_by_role("button", name="Copy to name").bounding_box()
        area = output.bounding_box()
    assert [u for u in refused if any(c in u for c in CDNS)] == [], "the output used a CDN"
    assert refused == [], f"requests left this machine: {refused[:5]}"
    assert not [e for e in errors if "Bokeh" in e or "Panel" in e], errors
    # it fits the cell: no sideways scrolling, "Copy to name" not cut off
    assert widths["scroll"] <= widths["client"] + 1, widths
    assert copy is not None and area is not None
    assert copy["x"] + copy["width"] <= area["x"] + area["width"] + 1
