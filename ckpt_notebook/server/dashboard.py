"""The full dashboard at ``{base_url}ckpt-notebook/dashboard?store=URL``, behind Jupyter's
own authentication.

How: one ``ckpt dashboard`` process per store, bound to 127.0.0.1 on a port it picks, with a
random token only this server knows (passed in its environment, never on a command line);
authenticated Jupyter handlers proxy the page, its static files and Bokeh's websocket to
it, adding the token. So the browser only ever talks to Jupyter, panel and bokeh never load
into the Jupyter server (JupyterLab starts as fast as before, and a dashboard that crashes
takes nothing else down), and the loopback port refuses everyone without the token (other
local users, DNS-rebound pages: ``ui/dashboard/access.py``). The port is read from the line
the child prints once it has bound it, so no other process can be mistaken for it.
docs/rest-api.md ("The dashboard in JupyterLab") says why not Panel's server extension or
Bokeh's handlers inside Jupyter's tornado app.

``dashboard?store=URL`` sends the browser on to ``dashboard/KEY/`` (KEY names the store's
URL), so the page's relative ``static/...`` URLs and its websocket (``dashboard/KEY/ws``)
land here too. Pages, files and the websocket are ``GET`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import secrets
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import tornado
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketHandler, websocket_connect

from .paths import default_store, store_url

__all__ = ["DASHBOARDS_SETTING", "Dashboards", "dashboard_handlers"]

DASHBOARDS_SETTING = "ckpt_notebook_dashboards"
TOKEN_ENV = "CKPT_NOTEBOOK_DASHBOARD_TOKEN"  # noqa: S105 - `ckpt dashboard`'s variable's name
START_TIMEOUT_S = 120.0
_SERVING = re.compile(r"ckpt dashboard: serving .* at http://127\.0\.0\.1:(\d+)/")
_REQUEST_HEADERS = ("Accept", "Accept-Language", "User-Agent", "If-None-Match",
                    "If-Modified-Since", "Cache-Control")
_ANSWER_HEADERS = ("Content-Type", "Cache-Control", "ETag", "Last-Modified", "Expires")


@dataclass
class Backend:
    """One ``ckpt dashboard`` child process."""

    url: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    port: int = 0
    process: asyncio.subprocess.Process | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}", "Host": self.address}

    async def start(self) -> None:
        env = {**os.environ, TOKEN_ENV: self.token}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ckpt_notebook.cli", "--store", self.url, "dashboard",
            "--port", "0", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env)
        try:
            self.port = await asyncio.wait_for(self._port(), START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        asyncio.ensure_future(self._drain())  # noqa: RUF006 - ends with the process

    async def _port(self) -> int:
        assert self.process is not None and self.process.stdout is not None
        while line := (await self.process.stdout.readline()).decode(errors="replace"):
            self.output.append(line.rstrip())
            found = _SERVING.search(line)
            if found:
                return int(found.group(1))
        last = " ".join(self.output) or "no output"
        raise tornado.web.HTTPError(502, f"the dashboard for {self.url} did not start: {last}")

    async def _drain(self) -> None:
        """Keep reading its output (a full pipe would stall it); the last lines are kept."""
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode(errors="replace").rstrip())

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()

    async def close(self, timeout: float = 10.0) -> None:
        """Stop the process and wait for it (its pipes close on this event loop)."""
        self.stop()
        if self.process is None:
            return
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


class Dashboards:
    """The dashboard processes of one Jupyter server, by store URL; started on first use."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}  # KEY -> store URL
        self._backends: dict[str, Backend] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def key(url: str) -> str:
        return hashlib.sha256(url.encode()).hexdigest()[:16]

    def register(self, url: str) -> str:
        key = self.key(url)
        self.urls[key] = url
        return key

    async def backend(self, key: str) -> Backend:
        url = self.urls.get(key)
        if url is None:
            raise tornado.web.HTTPError(404, "no such dashboard; open it again from "
                                             "ckpt-notebook/dashboard?store=URL")
        async with self._lock:
            backend = self._backends.get(key)
            if backend is None or not backend.alive:
                backend = Backend(url)
                await backend.start()
                self._backends[key] = backend
            return backend

    def stop_all(self) -> None:
        """At exit: ask every process to stop (no event loop to wait on)."""
        for backend in self._backends.values():
            backend.stop()

    async def close(self) -> None:
        """Stop every process and wait for them."""
        backends, self._backends = list(self._backends.values()), {}
        await asyncio.gather(*(b.close() for b in backends))


class _Dashboard(JupyterHandler):
    @property
    def dashboards(self) -> Dashboards:
        found: Dashboards = self.settings[DASHBOARDS_SETTING]
        return found


class DashboardEntry(_Dashboard):
    """``dashboard?store=URL``: sends the browser on to that store's dashboard."""

    @tornado.web.authenticated
    async def get(self) -> None:
        root = os.path.abspath(os.path.expanduser(self.settings["server_root_dir"]))
        try:
            url = store_url(root, self.get_argument("store", ""), default_store(root))
        except ValueError as err:
            raise tornado.web.HTTPError(400, str(err)) from err
        key = self.dashboards.register(url)
        await self.dashboards.backend(key)  # started now: the page it lands on is ready
        self.redirect(url_path_join(self.base_url, "ckpt-notebook", "dashboard", key) + "/")


class DashboardPage(_Dashboard):
    """The page and its files, fetched from the store's dashboard process."""

    @tornado.web.authenticated
    async def get(self, key: str, path: str) -> None:
        backend = await self.dashboards.backend(key)
        headers = backend.headers()
        headers.update((h, v) for h in _REQUEST_HEADERS
                       if (v := self.request.headers.get(h)) is not None)
        query = f"?{self.request.query}" if self.request.query else ""
        answer = await AsyncHTTPClient().fetch(
            HTTPRequest(f"http://{backend.address}/{path}{query}", headers=headers,
                        follow_redirects=False, request_timeout=120), raise_error=False)
        if answer.code == 599:
            raise tornado.web.HTTPError(502, f"the dashboard for {backend.url} does not "
                                             f"answer: {answer.error}")
        self.set_status(answer.code)
        for name in _ANSWER_HEADERS:
            if name in answer.headers:
                self.set_header(name, answer.headers[name])
        if answer.code != 304:
            self.write(answer.body or b"")
        self.finish()


class DashboardSocket(WebSocketMixin, WebSocketHandler, _Dashboard):
    """Bokeh's websocket, relayed message by message to the store's dashboard process."""

    upstream: WebSocketClientConnection | None = None

    @ws_authenticated
    async def get(self, key: str) -> None:
        backend = await self.dashboards.backend(key)
        wanted = self.request.headers.get("Sec-WebSocket-Protocol", "")
        query = f"?{self.request.query}" if self.request.query else ""
        headers = {**backend.headers(), "Origin": f"http://{backend.address}"}
        try:
            self.upstream = await websocket_connect(
                HTTPRequest(f"ws://{backend.address}/ws{query}", headers=headers),
                subprotocols=[p.strip() for p in wanted.split(",") if p.strip()] or None,
                on_message_callback=self._from_upstream)
        except (OSError, tornado.httpclient.HTTPClientError) as err:
            raise tornado.web.HTTPError(502, f"dashboard websocket: {err}") from err
        await super().get(key)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return None if self.upstream is None else self.upstream.selected_subprotocol

    def _from_upstream(self, message: str | bytes | None) -> None:
        if message is None:
            self.close()
            return
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):
            self.write_message(message, binary=isinstance(message, bytes))

    async def on_message(self, message: str | bytes) -> None:
        if self.upstream is not None:
            with contextlib.suppress(tornado.websocket.WebSocketClosedError):
                await self.upstream.write_message(message, binary=isinstance(message, bytes))

    def on_close(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    def check_xsrf_cookie(self) -> None:  # a websocket GET: origin is checked instead
        pass


def dashboard_handlers() -> list[tuple[str, type[Any]]]:
    """(route below ``{base_url}ckpt-notebook/``, handler) pairs; the socket first."""
    key = "([0-9a-f]{16})"
    return [
        ("dashboard", DashboardEntry),
        (f"dashboard/{key}/ws", DashboardSocket),
        (f"dashboard/{key}/(.*)", DashboardPage),
    ]
