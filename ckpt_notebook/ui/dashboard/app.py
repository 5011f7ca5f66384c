"""Serving the dashboard: ``ckpt dashboard`` (:func:`main`, :func:`serve`), inline in a
notebook (:func:`inline`), and the live updates both get from :class:`StoreWatcher`.

The server binds to 127.0.0.1 unless told otherwise, and warns when told otherwise: the
page can pin, delete and prune, and has no login of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import sys
import threading
import weakref
from collections.abc import Callable, Collection
from typing import Any

from ...storage import Store
from .model import DashboardModel

__all__ = ["StoreWatcher", "build", "inline", "main", "serve"]

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
        if self.store.backend.is_local:
            self._watch_local()
        else:
            self._poll()

    def _watch_local(self) -> None:
        import watchfiles

        root = self.store.backend.root
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


def _extension() -> None:
    import panel as pn

    pn.extension("tabulator", notifications=True)


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
    _extension()
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
    """Where pages may open the websocket from: this host by the names it is reached by."""
    hosts = {"localhost", "127.0.0.1", address}
    if not is_loopback(address):
        name = socket.gethostname()
        hosts |= {name, socket.getfqdn()}
        with contextlib.suppress(OSError):
            hosts |= set(socket.gethostbyname_ex(name)[2])
    hosts = {f"[{h}]" if ":" in h else h for h in hosts}
    return sorted(f"{h}:{port}" for h in hosts
                  if h not in ("0.0.0.0", "[::]", ""))  # noqa: S104


def _url(address: str, port: int) -> str:
    if address in ("0.0.0.0", "::", ""):  # noqa: S104 - naming it, not binding it
        return f"http://{socket.gethostname()}:{port}/ (bound to all addresses)"
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/"


def serve(store: str | Store | None = None, port: int = 0, address: str = LOOPBACK,
          show: bool = False, *, threaded: bool = False,
          websocket_origin: list[str] | None = None, poll_interval: float = POLL_INTERVAL_S,
          verbose: bool = True) -> Any:
    """Serve the dashboard for ``store`` on ``address:port`` (``port=0``: a free one).

    Blocks until interrupted unless ``threaded``; returns the Panel server (or its thread,
    which has ``stop()``). Prints the URL; warns when bound to a non-loopback address.
    """
    import panel as pn

    store = store if isinstance(store, Store) else Store(store)
    port = port or free_port(address)
    if not is_loopback(address):
        print(f"WARNING: the dashboard is bound to {address}, not {LOOPBACK}: anyone who can "
              f"reach this machine on port {port} can see this store and pin, copy, delete "
              "and prune its checkpoints; it has no login. Use --address 127.0.0.1 (the "
              "default) unless you mean it.", file=sys.stderr, flush=True)
    watcher = StoreWatcher(store, poll_interval)
    _extension()
    _warm_up(store)
    watcher.start()  # before the first page, so that its first scan finds no one to tell
    server = pn.serve({"/": lambda: build(store, watcher=watcher)}, port=port,
                      address=address, show=show, start=threaded, threaded=threaded,
                      websocket_origin=websocket_origin or _origins(address, port),
                      title="ckpt dashboard", verbose=False)
    if verbose:
        print(f"ckpt dashboard: serving {store.url} at {_url(address, port)} "
              "(Ctrl-C stops it)", flush=True)
    if threaded:
        return server
    server.start()
    try:
        server.io_loop.start()
    finally:
        watcher.stop()
    return server


def main(argv: list[str] | None = None) -> int:
    """``ckpt dashboard [--store URL] [--port N] [--address ADDR] [--show]``."""
    parser = argparse.ArgumentParser(prog="ckpt dashboard",
                                     description="Serve the checkpoint dashboard.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ckpt dashboard``, for the CLI to reuse."""
    parser.add_argument("--store", default=None,
                        help="store URL (default: $CKPT_NOTEBOOK_STORE or ./checkpoints)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--address", default=LOOPBACK,
                        help=f"address to bind (default {LOOPBACK}; anything else is "
                             "reachable from other machines)")
    parser.add_argument("--show", action="store_true", help="open it in a browser")


def run(args: argparse.Namespace) -> int:
    """Run ``ckpt dashboard`` from parsed :func:`add_arguments` options."""
    from ...errors import CkptError

    try:
        serve(args.store, port=args.port, address=args.address, show=args.show)
    except KeyboardInterrupt:
        return 0
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            print(f"ckpt dashboard: port {args.port} is in use; pass another --port (0 picks "
                  "a free one)", file=sys.stderr)
        else:
            print(f"ckpt dashboard: {err}", file=sys.stderr)
        return 1
    except CkptError as err:
        print(f"ckpt dashboard: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
