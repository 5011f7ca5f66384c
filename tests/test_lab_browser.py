"""ckpt_notebook inside a real JupyterLab, end to end, in Debian's headless chromium.

A person's path through it: open a notebook, run a cell that trains a few steps and saves with
``%checkpoint save``, open the Checkpoints panel and see that checkpoint; right-click the
``models/`` folder, "Copy to checkpoint…", type a name, watch the notification, and see the
named checkpoint in the panel; open the dashboard in the main area and see it render. The
browser may reach nothing but this machine: every other request is refused and counted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.lab import CHROMIUM, JupyterLab, chromium, offline

from ckpt_notebook.storage import Store

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="chromium is not installed (make browser installs it)")
WAIT_MS = 60_000
CELLS = [
    "%load_ext ckpt_notebook",
    "import pathlib\n"
    "import torch\n"
    "torch.manual_seed(0)\n"
    "model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))\n"
    "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    "for step in range(1, 4):\n"
    "    loss = model(torch.randn(32, 8)).pow(2).mean()\n"
    "    optimizer.zero_grad(); loss.backward(); optimizer.step()\n"
    "pathlib.Path('models').mkdir(exist_ok=True)\n"
    "torch.save(model.state_dict(), 'models/weights.pt')",
    "%checkpoint save --metric loss=0.25",
]


def notebook(cells: list[str]) -> dict[str, Any]:
    return {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                       "outputs": [], "source": c} for c in cells],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    root = tmp_path_factory.mktemp("lab") / "work"
    root.mkdir()
    (root / "train.ipynb").write_text(json.dumps(notebook(CELLS)))
    with JupyterLab(root, env={"CKPT_NOTEBOOK_STORE": ""}) as server:
        yield server


@pytest.fixture(scope="module")
def page(lab: JupyterLab) -> Iterator[Any]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = context.new_page()
        page.refused = []
        offline(page, page.refused)
        page.set_default_timeout(WAIT_MS)
        page.goto(lab.url("lab/tree/train.ipynb"))
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell")
        yield page
        context.close()


def command(page: Any, name: str, args: dict[str, Any] | None = None) -> None:
    """Run a JupyterLab command without waiting for what it starts (a cell run, a copy)."""
    page.evaluate("([n, a]) => { window.jupyterapp.commands.execute(n, a); }", [name, args or {}])


KERNEL_READY = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""


def wait_for(check: Any, what: str, timeout: float = WAIT_MS / 1000) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_notebook_save_shows_in_the_panel(lab: JupyterLab, page: Any, tmp_path: Path) -> None:
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.wait_for_function(KERNEL_READY)
    command(page, "notebook:run-all-cells")
    store = Store(str(lab.root / "checkpoints"))
    saved = wait_for(lambda: [i for i in store.list() if i.step == 3], "the notebook's save")
    command(page, "ckpt-notebook:open-panel")
    row = page.locator(f".ckpt-Panel .ckpt-Row[data-id='{saved[0].id}']")
    row.wait_for()
    assert "3" in row.inner_text()
    page.screenshot(path=str(tmp_path / "panel.png"))
    assert page.refused == [], f"requests left this machine: {page.refused[:5]}"


def test_copy_to_checkpoint_from_the_file_browser(lab: JupyterLab, page: Any,
                                                  tmp_path: Path) -> None:
    wait_for(lambda: (lab.root / "models" / "weights.pt").exists(), "models/weights.pt")
    command(page, "filebrowser:go-to-path", {"path": "/"})
    command(page, "filebrowser:refresh")
    item = page.locator(".jp-DirListing-item[data-isdir='true']", has_text="models")
    item.click(button="right")
    page.locator(".lm-Menu-item", has_text="Copy to checkpoint").click()
    dialog = page.locator(".ckpt-CopyDialog")
    name = dialog.locator("input[name='name']")
    name.fill("bad name!")  # validated as you type, with the rules ckpt copy uses
    page.locator(".ckpt-CopyDialog-error", has_text="A-Z a-z 0-9").wait_for()
    name.fill("models-v1")
    page.screenshot(path=str(tmp_path / "copy-dialog.png"))
    page.locator(".jp-Dialog .jp-mod-accept").click()
    toast = page.locator(".Toastify__toast", has_text="models-v1").filter(
        has=page.get_by_role("button", name="Show in panel")).first
    toast.wait_for()
    page.screenshot(path=str(tmp_path / "copied.png"))
    toast.get_by_role("button", name="Show in panel").click()
    page.locator(".ckpt-Panel .ckpt-Row[data-id='models-v1']").wait_for()
    infos = {i.id: i for i in Store(str(lab.root / "checkpoints")).list()}
    assert infos["models-v1"].named and infos["models-v1"].kind == "files"
    assert page.refused == [], f"requests left this machine: {page.refused[:5]}"


def test_the_dashboard_opens_in_the_main_area(lab: JupyterLab, page: Any,
                                              tmp_path: Path) -> None:
    command(page, "ckpt-notebook:open-dashboard")
    frame = page.frame_locator(".jp-MainAreaWidget iframe").first
    frame.locator(".tabulator-row", has_text="models-v1").first.wait_for()
    page.screenshot(path=str(tmp_path / "dashboard.png"))
    assert page.refused == [], f"requests left this machine: {page.refused[:5]}"
