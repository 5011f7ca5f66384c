"""A real JupyterLab on 127.0.0.1 and a headless chromium to drive it, for browser tests.

    with JupyterLab(root) as lab, chromium() as browser:
        page = browser.new_page()
        page.goto(lab.url("lab/tree/train.ipynb"))

The server runs from this environment (so the ckpt_notebook lab and server extensions are the
installed ones), with a random token, ``expose_app_in_browser`` (tests drive commands through
``window.jupyterapp``), and ``--allow-root`` (CI runs as root).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CKPT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterLab:
    """``jupyter lab`` serving ``root``; ``url(path)`` carries the token."""

    def __init__(self, root: Path, *, env: dict[str, str] | None = None,
                 timeout: float = 90.0) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log = root.parent / f"jupyter-lab-{self.port}.log"
        self._env = {**os.environ, **(env or {})}
        self._timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def __enter__(self) -> JupyterLab:
        # settings and workspaces of its own: nothing leaks in from, or out to, ~/.jupyter
        settings = self.root.parent / f"lab-settings-{self.port}"
        news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
                 "--ip", "127.0.0.1", f"--port={self.port}",
                 f"--IdentityProvider.token={self.token}",
                 f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
                 f"--LabApp.user_settings_dir={settings}",
                 f"--LabApp.workspaces_dir={settings / 'workspaces'}",
                 "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                stdout=log, stderr=subprocess.STDOUT, env=self._env, cwd=self.root)
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url("api/status"), timeout=2).read()
                return self
            except OSError:
                time.sleep(0.3)
        self.__exit__()
        raise AssertionError(f"jupyter lab did not start:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def offline(page: Any, refused: list[str]) -> None:
    """Refuse every request that does not go to this machine, and note it in ``refused``."""

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "http://localhost",
                           "data:", "blob:", "about:")):
            r.continue_()
        else:
            refused.append(url)
            r.abort()

    page.route("**/*", route)
