"""Take the README's screenshots from the real example: ``make screenshots``.

Runs ``examples/quickstart.ipynb`` in a real JupyterLab (a copy of it, in a temp folder), as a
person would: every cell, training included. Then it photographs the Checkpoints panel, the
"Copy to checkpoint…" dialog on ``models/``, and the dashboard in the main area with the best
checkpoint selected, into ``docs/screenshots/``. Nothing here is a test fixture.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.lab import JupyterLab, chromium, offline

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "screenshots"
WAIT_MS = 600_000  # the notebook trains for real
KERNEL_IDLE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""


def command(page: Any, name: str, args: dict[str, Any] | None = None) -> None:
    page.evaluate("([n, a]) => { window.jupyterapp.commands.execute(n, a); }", [name, args or {}])


def run_notebook(page: Any, root: Path) -> None:
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    page.wait_for_function(KERNEL_IDLE)
    command(page, "notebook:run-all-cells")
    deadline = time.monotonic() + WAIT_MS / 1000
    while not (root / "models" / "model.safetensors").exists():
        if time.monotonic() > deadline:
            raise SystemExit("the quickstart notebook did not finish")
        time.sleep(0.5)
    page.wait_for_function(KERNEL_IDLE)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ckpt-screens-") as tmp:
        root = Path(tmp) / "examples"
        root.mkdir()
        shutil.copy(REPO / "examples" / "quickstart.ipynb", root)
        refused: list[str] = []
        with JupyterLab(root, env={"CKPT_NOTEBOOK_STORE": ""}) as lab, chromium() as browser:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            page = context.new_page()
            offline(page, refused)
            page.set_default_timeout(WAIT_MS)
            page.goto(lab.url("lab/tree/quickstart.ipynb"))
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell")
            print("running examples/quickstart.ipynb in JupyterLab ...", flush=True)
            run_notebook(page, root)

            command(page, "ckpt-notebook:open-panel")
            page.locator(".ckpt-Panel .ckpt-Row").first.wait_for()
            page.locator(".ckpt-Panel .ckpt-Row").first.hover()
            page.screenshot(path=str(OUT / "lab-panel.png"))

            command(page, "filebrowser:go-to-path", {"path": "/"})
            command(page, "filebrowser:refresh")
            page.locator(".jp-DirListing-item[data-isdir='true']",
                         has_text="models").click(button="right")
            page.locator(".lm-Menu-item", has_text="Copy to checkpoint").click()
            page.locator(".ckpt-CopyDialog input[name='name']").fill("quickstart-v1")
            page.screenshot(path=str(OUT / "lab-copy.png"))
            page.locator(".jp-Dialog .jp-mod-accept").click()
            toast = page.locator(".Toastify__toast", has_text="quickstart-v1").filter(
                has=page.get_by_role("button", name="Show in panel")).first
            toast.wait_for()
            toast.get_by_role("button", name="Show in panel").click()
            page.locator(".ckpt-Panel .ckpt-Row[data-id='quickstart-v1']").wait_for()

            command(page, "ckpt-notebook:open-dashboard")
            frame = page.frame_locator(".jp-MainAreaWidget iframe").first
            frame.locator(".tabulator-row", has_text="kept: best").first.click()
            frame.locator("canvas").first.wait_for()
            time.sleep(2)  # plots finish drawing
            page.screenshot(path=str(OUT / "dashboard.png"))
            context.close()
        if refused:
            raise SystemExit(f"requests left this machine: {refused[:5]}")
    for name in ("lab-panel.png", "lab-copy.png", "dashboard.png"):
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
