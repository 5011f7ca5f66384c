"""Serving the dashboard: ``ckpt dashboard`` (:func:`main`, :func:`serve`), inline in a
notebook (:func:`inline`), and the live updates both get from :class:`StoreWatcher`.

The server binds to 127.0.0.1 unless told otherwise, and warns when told otherwise. Every
request needs the token printed in the URL and a Host and Origin of this server
(:mod:`.access`): the page can pin, copy, delete and prune, and 127.0.0.1 is reachable by every
local user. The standalone server writes nothing more open than the store's folder.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Collection
from typing import Any

from ...errors import InvalidArgumentError
from ...storage import Store
from . import access
from .model import DashboardModel, store_mode

__all__ = ["ServerThread", "StoreWatcher", "build", "inline", "main", "serve"]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
POLL_INTERVAL_S = 1.0
HISTORY_POLL_EVERY = 5  # remote stores: re-read metric history every 5th poll
_CHECKPOINT_ENTRIES = ("manifests", "pins", "policy.json")

Listener = Callable[[Collection[str]], None]


class StoreWatcher:
    """Tells listeners what changed in a store: ``"checkpoints"`` (manifests, pins, policy)
    and/or ``"history"`` (metric history). Local stores are watched with watchfiles, remote
    ones polled every ``interval`` seconds. One thread serves every listener."""

    def __init__(self, store: Store, interval: float = POLL_INTERVAL_S) -> None:
        self.store = store
        self.interval = interval
        self._listeners: dict[int, Listener] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(kinds)`` from the watcher thread on changes; returns unsubscribe."""
        key = id(listener)
        with self._lock:
            self._listeners[key] = listener
        self.start()
        return lambda: self._unsubscribe(key)

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="ckpt-dashboard-watch")
                self._thread.start()

    def _unsubscribe(self, key: int) -> None:
        with self._lock:
            self._listeners.pop(key, None)

    def stop(self) -> None:
        self._stop.set()

    def emit(self, kinds: Collection[str]) -> None:
        with self._lock:
            listeners = list(self._listeners.values())
        for listener in listeners:
            with contextlib.suppress(Exception):  # one broken page must not stop the others
                listener(kinds)

    def _run(self) -> None:
        folder = self.store.backend.local_folder
        if folder is not None:
            self._watch(folder)
        else:
            self._poll()

    def _watch(self, root: str) -> None:
        import watchfiles

        while not self._stop.is_set() and not os.path.isdir(root):
            self._stop.wait(self.interval)  # a store not created yet: wait for its folder
        self.emit({"checkpoints", "history"})

        def wanted(_change: Any, path: str) -> bool:
            return _kind(os.path.relpath(path, root)) is not None

        try:
            for changes in watchfiles.watch(root, watch_filter=wanted, stop_event=self._stop,
                                            debounce=100, step=50, rust_timeout=1000,
                                            raise_interrupt=False):
                kinds = {_kind(os.path.relpath(path, root)) for _c, path in changes}
                self.emit({k for k in kinds if k})
        except (OSError, RuntimeError):
            self._poll()  # e.g. out of inotify watches: fall back to polling

    def _poll(self) -> None:
        last: Any = None
        tick = 0
        while not self._stop.wait(self.interval):
            tick += 1
            try:
                s = self.store
                now = (frozenset(s.index.ids_on_disk()), frozenset(s.pins.ids()),
                       repr(s.policy.read()))
            except Exception:  # a network hiccup: try again next time
                log.debug("polling %s failed", self.store.url, exc_info=True)
                continue
            kinds = set()
            if now != last:
                kinds.add("checkpoints")
                last = now
            if tick % HISTORY_POLL_EVERY == 0:
                kinds.add("history")
            if kinds:
                self.emit(kinds)


def _kind(rel: str) -> str | None:
    top = rel.replace(os.sep, "/").split("/", 1)[0]
    if top in _CHECKPOINT_ENTRIES:
        return "checkpoints"
    return "history" if top == "runs" else None


def _extension(*, inline: bool = False) -> None:
    """Load Panel's extensions; ``inline``: into a notebook, with no network.

    In a notebook Panel publishes BokehJS, Panel's JS and CSS as one load bundle
    (``application/vnd.holoviews_load.v0+json``, executed by the ``@pyviz/jupyterlab_pyviz``
    lab extension that ships with pyviz_comms, a Panel dependency). By default that bundle
    and the output's stylesheets point at cdn.bokeh.org, cdn.holoviz.org and cdn.jsdelivr.net:
    offline the cell stays blank and only the browser console says "Bokeh or Panel library is
    missing". ``inline=True`` (Panel's ``config.inline``) puts the JS and CSS into the output
    itself (~3.6 MB once per ``%checkpoint dashboard`` cell; the lab extension holds the comm
    machinery, not BokehJS, so there is no installed copy to reuse instead). What CDN addresses
    are left in the bundle are fallbacks it never fetches in JupyterLab (a require.js path
    table, "skip if already loaded" lists); tests/test_dashboard_offline.py runs it in
    JupyterLab with every non-loopback request refused.

    The standalone server (``inline=False``) serves the same files from its own
    ``/static/`` routes: never a CDN either.
    """
    import panel as pn

    pn.extension("tabulator", notifications=True, inline=inline)


def build(store: str | Store | None = None, *, watcher: StoreWatcher | None = None) -> Any:
    """One page (model + views) over ``store``, live when ``watcher`` is given; in a server
    session UI updates go to the session's event loop."""
    import panel as pn

    from .views import DashboardView, UiLoop

    model = DashboardModel(store)
    loop = UiLoop.current()
    in_server = loop.doc is not None
    # In a server session the page first shows the table; the rest follows once it loaded.
    view = DashboardView(model, loop=loop, notifications=pn.state.notifications,
                         defer=in_server)
    if watcher is not None and in_server:
        unsubscribe = watcher.subscribe(view.on_store_change)

        def closed(_ctx: Any) -> None:
            unsubscribe()
            view.loop.closed = True
        pn.state.on_session_destroyed(closed)
    elif watcher is not None:  # a notebook: listen only while the page lives
        ref = weakref.WeakMethod(view.on_store_change)
        watcher.subscribe(lambda kinds: (ref() or _ignore)(kinds))
        weakref.finalize(view, watcher.stop)
    if in_server:
        pn.state.onload(view.load_rest)
    view.panel.dashboard_view = view  # type: ignore[attr-defined]  # for tests and tools
    return view.panel


def _ignore(_kinds: Collection[str]) -> None:
    pass


def _warm_up(store: Store) -> None:
    """Build one page before serving, so the first visitor does not wait for the imports
    and caches a first page needs (and a stale listing index is rewritten now)."""
    from .views import DashboardView

    with contextlib.suppress(Exception):  # a broken store shows its error in the page
        DashboardView(DashboardModel(store))


def inline(store: str | Store | None = None) -> Any:
    """The dashboard as a Panel object for a notebook cell (``%checkpoint dashboard``); it
    follows the store live (the watcher runs in a thread, so it updates while a cell runs)."""
    _extension(inline=True)
    store = store if isinstance(store, Store) else Store(store)
    return build(store, watcher=StoreWatcher(store))


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def free_port(address: str = LOOPBACK) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _origins(address: str, port: int) -> list[str]:
    """The ``host:port`` names this server may be addressed by (the Host header) and pages
    may come from (Origin): 127.0.0.1 and localhost, the bound address, and - only when bound
    to a non-loopback address, where other machines reach it - this machine's names."""
    hosts = {"localhost", "127.0.0.1", address}
    if not is_loopback(address):
        name = socket.gethostname()
        hosts |= {name, socket.getfqdn()}
        with contextlib.suppress(OSError):
            hosts |= set(socket.gethostbyname_ex(name)[2])
    hosts = {f"[{h}]" if ":" in h else h for h in hosts}
    return sorted(f"{h}:{port}" for h in hosts
                  if h not in ("0.0.0.0", "[::]", ""))  # noqa: S104


def _base_url(address: str, port: int) -> str:
    if address in ("0.0.0.0", "::", ""):  # noqa: S104 - naming it, not binding it
        return f"http://{socket.gethostname()}:{port}/"
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/"


def _warn(address: str, port: int, token: str | None) -> None:
    if token is None:
        print(f"WARNING: serving without a token (--no-token): every user of this machine "
              f"who can open port {port} can see this store and pin, copy, delete and prune "
              "its checkpoints. Leave --no-token out unless every local user is trusted.",
              file=sys.stderr, flush=True)
    if not is_loopback(address):
        print(f"WARNING: the dashboard is bound to {address}, not {LOOPBACK}: other machines "
              f"can reach port {port}, and the token travels there as plain http. Use "
              f"--address {LOOPBACK} (the default) unless you mean it.", file=sys.stderr,
              flush=True)


def _restrict_umask(store: Store) -> None:
    """Files this process writes are no more open than the store's folder: a store others
    cannot read (0o700, 0o750) gets no group/world-readable pins, requests or copies."""
    mode = store_mode(store)
    if mode is not None:
        current = os.umask(0o077)
        os.umask(current | (0o077 & ~mode))


def _open_browser(url: str, token: str | None) -> None:
    """Open ``url`` without putting the token on a command line other users can read (as
    Jupyter does): the browser opens a private file that goes on to the URL."""
    import webbrowser

    if token is None:
        webbrowser.open(url)
        return
    fd, path = tempfile.mkstemp(prefix="ckpt-dashboard-", suffix=".html")  # mode 0o600
    with os.fdopen(fd, "w") as f:
        f.write(_redirect_page(url))
    atexit.register(_remove, path)
    webbrowser.open(f"file://{path}")


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _redirect_page(url: str) -> str:
    import html
    import json

    return (f"<!doctype html><meta http-equiv='refresh' content='0;url={html.escape(url)}'>"
            f"<script>location.replace({json.dumps(url)})</script>\n")


class ServerThread(threading.Thread):
    """A served dashboard on its own thread and event loop (``serve(threaded=True)``); the
    gate is in place before the loop takes its first request. ``url`` carries the token."""

    def __init__(self, make: Callable[[], Any], url: str, on_stop: Callable[[], None],
                 ) -> None:
        super().__init__(daemon=True, name="ckpt-dashboard-server")
        self._make, self.url, self._on_stop = make, url, on_stop
        self.server: Any = None
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self.server = self._make()
            self.server.start()
        except BaseException as err:  # handed to the thread that called serve()
            self.error = err
            return
        finally:
            self.ready.set()
        try:
            self.server.io_loop.start()
        finally:
            self._on_stop()

    def stop(self) -> None:
        server = self.server
        if server is None or not self.is_alive():
            return

        def shutdown() -> None:
            server.stop()
            server.io_loop.stop()
        server.io_loop.add_callback(shutdown)
        self.join(10)


def serve(store: str | Store | None = None, port: int = 0, address: str = LOOPBACK,
          show: bool = False, *, threaded: bool = False,
          websocket_origin: list[str] | None = None, poll_interval: float = POLL_INTERVAL_S,
          verbose: bool = True, token: str | bool = True) -> Any:
    """Serve the dashboard for ``store`` on ``address:port`` (``port=0``: a free one).

    ``token``: ``True`` a new random one (the default), a string that one, ``False`` none
    (warned about); every request needs it (see :mod:`.access`). ``websocket_origin``: the
    ``host:port`` names requests may address and come from (default: :func:`_origins`).
    Blocks until interrupted unless ``threaded``; then returns a :class:`ServerThread`
    (``url``, ``stop()``). Prints the URL with the token; warns when bound to a non-loopback
    address or served without a token.
    """
    import panel as pn

    store = store if isinstance(store, Store) else Store(store)
    port = port or free_port(address)
    if isinstance(token, str) and not token.strip():
        raise InvalidArgumentError("the dashboard token is empty",
                                   hint="pass one, or token=False to serve without one")
    secret = access.new_token() if token is True else (token or None)
    hosts = websocket_origin or _origins(address, port)
    rules = access.Access.for_server(secret, hosts, port)
    url = rules.url(_base_url(address, port))
    _warn(address, port, secret)
    watcher = StoreWatcher(store, poll_interval)
    _extension()
    _warm_up(store)
    watcher.start()  # before the first page, so that its first scan finds no one to tell

    def make() -> Any:
        server = pn.serve({"/": lambda: build(store, watcher=watcher)}, port=port,
                          address=address, show=False, start=False, threaded=False,
                          websocket_origin=hosts, title="ckpt dashboard", verbose=False)
        # Bokeh's Server has no public handle on its tornado Application; the gate needs it.
        access.gate(server._tornado, rules)
        return server

    def announce() -> None:
        if verbose:
            where = " (bound to all addresses)" if address in ("0.0.0.0", "::", "") else ""  # noqa: S104
            print(f"ckpt dashboard: serving {store.url} at {url}{where} (Ctrl-C stops it)",
                  flush=True)
        if show:
            _open_browser(url, secret)

    if threaded:
        thread = ServerThread(make, url, watcher.stop)
        thread.start()
        thread.ready.wait()
        if thread.error is not None:
            watcher.stop()
            raise thread.error
        announce()
        return thread
    _restrict_umask(store)
    server = make()
    announce()
    server.start()
    try:
        server.io_loop.start()
    finally:
        watcher.stop()
    return server


def main(argv: list[str] | None = None) -> int:
    """``ckpt dashboard [--store URL] [--port N] [--address ADDR] [--show] [--token T |
    --no-token]``."""
    parser = argparse.ArgumentParser(prog="ckpt dashboard",
                                     description="Serve the checkpoint dashboard.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--store`` and the options of ``ckpt dashboard`` (:mod:`..commands` declares them)."""
    from ..commands import CLI, command
    from ..commands import add_arguments as add_declared

    parser.add_argument("--store", default=None,
                        help="store URL (default: $CKPT_NOTEBOOK_STORE or ./checkpoints)")
    add_declared(parser, command("dashboard"), CLI)


def run(args: argparse.Namespace) -> int:
    """Run ``ckpt dashboard`` from parsed :func:`add_arguments` options."""
    from ...errors import CkptError

    try:
        token = access.token_from_args(args)
        serve(args.store, port=args.port, address=args.address, show=args.show,
              token=token or False)
    except KeyboardInterrupt:
        return 0
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            print(f"ckpt dashboard: port {args.port} is in use; pass another --port (0 picks "
                  "a free one)", file=sys.stderr)
        else:
            print(f"ckpt dashboard: {err}", file=sys.stderr)
        return 1
    except (CkptError, ValueError) as err:
        print(f"ckpt dashboard: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
