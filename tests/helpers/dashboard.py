"""``ckpt dashboard`` in a subprocess, for tests that talk to it over HTTP or a browser.

    server = Dashboard(store)          # waits until it printed its URL
    server.url, server.origin, server.port, server.token
    server.stop()
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from conftest import pythonpath_env

_URL = re.compile(r"at ((http://127\.0\.0\.1:\d+)/\S*)")
_MAIN = "import sys; from ckpt_notebook.cli import main; sys.exit(main(sys.argv[1:]))"


class Dashboard:
    """``url`` is the URL it printed, with its token; ``origin`` the same without a path."""

    def __init__(self, store: Path, *args: str, start_s: float = 60.0) -> None:
        self.lines: list[str] = []
        self.url = self.origin = ""
        self._seen = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _MAIN, "dashboard", "--store", str(store), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=pythonpath_env())
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._seen.wait(start_s):
            self.stop()
            raise AssertionError("the dashboard did not start:\n" + "".join(self.lines))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = _URL.search(line)
            if found and not self.url:
                self.url, self.origin = found.group(1), found.group(2)
                self._seen.set()

    @property
    def port(self) -> int:
        return int(urlsplit(self.url).port or 0)

    @property
    def token(self) -> str:
        return self.url.partition("?token=")[2]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
