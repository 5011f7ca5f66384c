"""Real servers on 127.0.0.1 for tests, each a context manager plus a pytest fixture.

Import the fixtures by name into a test module (tests/ is on sys.path, as for conftest)::

    from servers import faulty_s3, hf_hub, http_files, s3_server

    FIXTURES = (s3_server, faulty_s3, http_files, hf_hub)  # a use: no ruff F401/F811

Fixtures
--------
``s3_server`` (session)  S3Server: a real ``moto_server`` subprocess.
    ``.endpoint_url``        "http://127.0.0.1:PORT"
    ``.storage_options``     dict for s3fs / fsspec (fresh copy on every access), equal to
                             ``.options()``; ``.options(max_attempts=2, **extra)`` for other retries
    ``.make_bucket(prefix)`` creates a uniquely named bucket, returns its name
    ``.url(bucket, path)``   "s3://bucket/path"
    ``.fs(**extra)``         a fresh ``s3fs.S3FileSystem`` on the server
    ``.client()``            a boto3 S3 client on the server (for assertions)
``faulty_s3`` (function)  FaultyProxy: a threaded HTTP reverse proxy in front of ``s3_server``
    that injects faults. Same ``.endpoint_url`` / ``.storage_options`` / ``.options()`` /
    ``.make_bucket()`` (made directly on moto, never faulted) / ``.url()`` / ``.fs()``, plus the
    policy (``fail_rate``, ``fail_all``, ``mode``, ``match``, ``max_consecutive``,
    ``fail_next(n)``, ``failing(...)`` context) and counters (``requests``, ``faults``,
    ``forwarded``, ``log``). ``.s3`` is the S3Server behind it.
``http_files`` (function)  HTTPFileServer serving a temp folder (``.root``), with HEAD, Range,
    Content-Length and HTML directory listings: ``.url(relpath)``, ``.write(relpath, data)``,
    ``.write_lfs_pointer(relpath, data)``; ``.requests`` logs (method, path, range).
``hf_hub`` (function)  HubServer (see servers_hf.py): a loopback stand-in for the Hugging Face Hub.
``ftp_files`` / ``ftps_files`` (function)  FTPServer (servers_ftp.py, pyftpdlib), anonymous and
    read-only over a temp folder (``.root``), plain or explicit TLS with a self-signed
    certificate (``.certfile``; trust it with SSL_CERT_FILE): ``.url(relpath)``,
    ``.write(relpath, data)``.

Pointing clients at them
------------------------
s3fs / fsspec::

    fs = s3fs.S3FileSystem(**s3_server.storage_options)
    fs = fsspec.filesystem("s3", **s3_server.storage_options)
    fs, path = fsspec.core.url_to_fs(s3_server.url(bucket, "x"), **s3_server.storage_options)

``storage_options`` carries ``skip_instance_cache=True``: fsspec caches filesystem instances by
their arguments (and each instance caches listings), so without it two tests, or a test and the
code under test, would share one S3FileSystem and its stale listings. Code that builds its own
filesystem from a URL and options gets a fresh one as long as it passes these options through.
Credentials are passed explicitly (key/secret "testing"); no AWS_* variable is set or needed.

fsspec HTTP::

    fs = fsspec.filesystem("http", skip_instance_cache=True)
    fs.cat(http_files.url("a.bin"))

Quirks found
------------
* moto (5.2) honours ``If-None-Match: *`` on PutObject and CompleteMultipartUpload: s3fs
  ``pipe_file(path, data, mode="create")`` and ``open(path, "xb")`` on an existing key raise
  ``FileExistsError`` (s3fs translates moto's 412 PreconditionFailed, Condition If-None-Match).
* Retries: botocore retries 5xx and connection errors itself, "standard" mode, random backoff
  up to 1 s, 2 s, 4 s... ``options(max_attempts=N)`` sets ``total_max_attempts`` = N (botocore's
  own ``max_attempts`` key counts retries *after* the first try). s3fs adds its own loop
  (5 tries, 0.1-0.8 s sleeps) around connection-level errors only. So a dropped connection
  with ``fail_all`` costs N x 5 requests and about 2 s per call even with N=1; a 500 costs N.
* Exception types a caller sees when faults outlast the retries: a 5xx becomes ``OSError``
  (s3fs translates it), but connection faults come out as botocore's own classes, which are
  *not* OSError: "drop" -> ``botocore.exceptions.ConnectionClosedError``, "reset" ->
  ``EndpointConnectionError`` (both ``BotoCoreError``).
* A PUT that succeeds on the server but whose answer is lost ("drop_after") is retried by
  botocore; with ``mode="create"`` (If-None-Match) the retry meets its own object and the
  caller gets ``FileExistsError`` although its write landed.
* s3fs reads through a block cache: ``open()`` + ``read()`` issues ranged GETs (the proxy and
  moto both handle them); ``cat`` issues one GET.
* Fixtures imported into several test modules are registered once per module; ``s3_server``
  therefore shares one moto process per session itself. To use the fixtures everywhere without
  importing them (and without ruff F811 on test arguments), conftest.py can import them.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pytest
from servers_ftp import FTPServer, ftp_files, ftps_files, self_signed_pem
from servers_hf import HubServer, hf_hub

__all__ = [
    "FTPServer",
    "FaultyProxy",
    "HTTPFileServer",
    "HubServer",
    "S3Server",
    "faulty_s3",
    "ftp_files",
    "ftps_files",
    "hf_hub",
    "http_files",
    "lfs_pointer",
    "s3_server",
    "self_signed_pem",
]

HOST = "127.0.0.1"
S3_KEY = "testing"
S3_SECRET = "testing"
S3_REGION = "us-east-1"

# Headers that belong to one hop, never forwarded by a proxy (RFC 9110 7.6.1), plus Expect:
# the proxy has already answered "100 Continue" and read the whole body.
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect",
}


# --------------------------------------------------------------------------- helpers


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Stop a server process: politely, then, after 10 s, for good."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (for servers that need it up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def lfs_pointer(data: bytes | None = None, *, oid: str | None = None,
                size: int | None = None) -> bytes:
    """The Git LFS pointer text for ``data`` (or for an explicit sha256 ``oid`` and ``size``)."""
    if data is not None:
        oid = hashlib.sha256(data).hexdigest()
        size = len(data)
    if oid is None or size is None or len(oid) != 64:
        raise ValueError("give data, or oid (64 hex digits) and size")
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


class _Server(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1, on a port the OS picks, served from a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        super().__init__((HOST, 0), handler)
        self.owner = owner
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(owner).__name__}-{self.port}", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler base: quiet, with a body reader that understands chunking."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections end, so their threads do too

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537).strip():  # trailers up to the blank line
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_bytes(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                   *, head: bool = False) -> None:
        self.send_response(status)
        sent = {k.lower() for k in (headers or {})}
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "content-length" not in sent:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)


# --------------------------------------------------------------------------- S3 (moto)


def _s3_options(endpoint_url: str, max_attempts: int, **extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": endpoint_url, "region_name": S3_REGION},
        "config_kwargs": {
            "retries": {"total_max_attempts": max_attempts, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 30,
        },
        "skip_instance_cache": True,
    }
    options.update(extra)
    return options


class S3Server:
    """``moto_server`` in a subprocess on 127.0.0.1: a real S3-compatible HTTP endpoint."""

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._logdir: str | None = None

    # lifecycle ----------------------------------------------------------------
    def start(self) -> S3Server:
        self._logdir = tempfile.mkdtemp(prefix="moto-")
        exe = Path(sys.executable).with_name("moto_server")
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
        last = ""
        for _attempt in range(3):  # the port may be taken between free_port() and bind
            self.port = free_port()
            log = Path(self._logdir, f"moto-{self.port}.log")
            with log.open("wb") as out:
                self.proc = subprocess.Popen([*base, "-H", HOST, "-p", str(self.port)],
                                             stdout=out, stderr=subprocess.STDOUT, env=env,
                                             stdin=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            last = log.read_text(errors="replace")[-2000:]
            self._kill()
        raise RuntimeError(f"moto_server did not start:\n{last}")

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2):
                    return True
            except urllib.error.HTTPError:
                return True  # it answers: good enough
            except OSError:
                time.sleep(0.05)
        return False

    def _kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    def stop(self) -> None:
        self._kill()
        if self._logdir:
            shutil.rmtree(self._logdir, ignore_errors=True)
            self._logdir = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # clients ------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def options(self, *, max_attempts: int = 2, **extra: Any) -> dict[str, Any]:
        """s3fs storage options for this server (explicit credentials, no instance cache)."""
        return _s3_options(self.endpoint_url, max_attempts, **extra)

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.options()

    def fs(self, **extra: Any) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.options(**extra))

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, region_name=S3_REGION)

    def make_bucket(self, prefix: str = "test") -> str:
        name = f"{prefix.lower()[:40]}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    @staticmethod
    def url(bucket: str, path: str = "") -> str:
        return f"s3://{bucket}/{path.lstrip('/')}" if path else f"s3://{bucket}"

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass


# --------------------------------------------------------------------------- faulty proxy

FAULT_MODES = ("500", "503", "drop", "reset", "drop_after")
_MIXED = ("500", "drop", "reset")


@dataclass
class ProxyRecord:
    method: str
    path: str  # path and query, as sent
    outcome: str  # "forwarded <status>" or "fault <mode>"


def _s3_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId><HostId>faulty-proxy</HostId>"
        "</Error>"
    ).encode()


class _ProxyHandler(_Handler):
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _handle(self) -> None:
        proxy: FaultyProxy = self.server.owner
        body = self.read_body()
        fault, record = proxy._decide(self.command, self.path)
        if fault in ("drop", "reset"):
            self._drop(reset=fault == "reset")
            return
        if fault in ("500", "503"):
            code, msg = (("InternalError", "We encountered an internal error. Please try again.")
                         if fault == "500" else ("SlowDown", "Please reduce your request rate."))
            self.send_bytes(int(fault), _s3_error(code, msg),
                            {"Content-Type": "application/xml"}, head=self.command == "HEAD")
            return
        try:
            status, reason, headers, data = proxy._forward(self.command, self.path, self.headers,
                                                           body)
            if fault is None:
                record.outcome = f"forwarded {status}"
        except OSError:
            self.send_bytes(502, _s3_error("BadGateway", "upstream failed"),
                            {"Content-Type": "application/xml"}, head=self.command == "HEAD")
            return
        if fault == "drop_after":  # the server did the work; the answer is lost
            self._drop(reset=False)
            return
        self.send_response_only(status, reason)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def _drop(self, *, reset: bool) -> None:
        self.close_connection = True
        if reset:  # RST instead of FIN
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()


class FaultyProxy:
    """A real HTTP reverse proxy on 127.0.0.1 that forwards to ``target_url`` and injects faults.

    Policy (change it at any time, from the test thread):

    * ``fail_rate``: share of eligible requests that fail (random, from ``seed``).
    * ``fail_all``: every eligible request fails.
    * ``fail_next(n)``: the next n eligible requests fail, whatever the rate.
    * ``mode``: how a request fails: "500" (S3 InternalError XML), "503" (SlowDown), "drop"
      (connection closed without an answer, before forwarding), "reset" (TCP RST), "drop_after"
      (forwarded - the server acts on it - then the answer is lost), "mixed" (500/drop/reset).
    * ``match``: optional ``(method, path_with_query) -> bool``; only matching requests are
      eligible (e.g. ``lambda m, p: m == "PUT" and "manifest" in p``).
    * ``max_consecutive``: when set, a given request (same method, path and query) never fails
      more than this many times in a row, so a client retrying more often surely succeeds.

    Requests are forwarded with their Host header unchanged (moto does not check signatures).
    Determinism: the random draws follow ``seed`` in arrival order; concurrent clients can
    change the order, so tests should assert on outcomes, not on exact fault positions.
    """

    def __init__(self, target_url: str, *, seed: int = 0, s3: S3Server | None = None) -> None:
        parts = urlsplit(target_url)
        self.target_host = parts.hostname or HOST
        self.target_port = parts.port or 80
        self.s3 = s3
        self.seed = seed
        self.fail_rate = 0.0
        self.fail_all = False
        self._mode = "500"
        self.match: Callable[[str, str], bool] | None = None
        self.max_consecutive: int | None = None
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._next_failures = 0
        self._streaks: dict[tuple[str, str], int] = {}
        self.requests = 0
        self.faults = 0
        self.forwarded = 0
        self.log: list[ProxyRecord] = []
        self._server: _Server | None = None

    # lifecycle ----------------------------------------------------------------
    def start(self) -> FaultyProxy:
        self._server = _Server(_ProxyHandler, self)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "proxy not started"
        return self._server.port

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # policy -------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in (*FAULT_MODES, "mixed"):
            raise ValueError(f"unknown fault mode {value!r}; one of {(*FAULT_MODES, 'mixed')}")
        self._mode = value

    def fail_next(self, n: int = 1) -> None:
        with self._lock:
            self._next_failures += n

    def heal(self) -> None:
        """No more faults (counters are kept)."""
        with self._lock:
            self.fail_rate, self.fail_all, self._next_failures = 0.0, False, 0

    @contextlib.contextmanager
    def failing(self, rate: float = 1.0, mode: str | None = None,
                match: Callable[[str, str], bool] | None = None) -> Iterator[FaultyProxy]:
        """Fail requests (``rate``, ``mode``, ``match``) inside the block only."""
        saved = (self.fail_rate, self.fail_all, self.mode, self.match)
        self.fail_rate, self.fail_all = rate, rate >= 1.0
        self.mode = mode or self.mode
        self.match = match
        try:
            yield self
        finally:
            self.fail_rate, self.fail_all, self.mode, self.match = saved

    def _decide(self, method: str, path: str) -> tuple[str | None, ProxyRecord]:
        with self._lock:
            self.requests += 1
            key = (method, path)
            fail = False
            if self.match is None or self.match(method, path):
                draw = self._rng.random()
                if self._next_failures > 0:
                    self._next_failures -= 1
                    fail = True
                else:
                    fail = self.fail_all or draw < self.fail_rate
                if (fail and self.max_consecutive is not None
                        and self._streaks.get(key, 0) >= self.max_consecutive):
                    fail = False
            if not fail:
                self._streaks.pop(key, None)
                record = ProxyRecord(method, path, "forwarded")
                self.log.append(record)
                return None, record
            self._streaks[key] = self._streaks.get(key, 0) + 1
            mode = self._rng.choice(_MIXED) if self.mode == "mixed" else self.mode
            self.faults += 1
            record = ProxyRecord(method, path, f"fault {mode}")
            self.log.append(record)
            return mode, record

    # forwarding ---------------------------------------------------------------
    def _forward(self, method: str, path: str, headers: Any,
                 body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = HTTPConnection(self.target_host, self.target_port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                    conn.putheader(k, v)
            if body or method in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            if method != "HEAD" or not any(k.lower() == "content-length" for k, _ in out):
                out = [(k, v) for k, v in out if k.lower() != "content-length"]
                out.append(("Content-Length", str(len(data))))
            with self._lock:
                self.forwarded += 1
            return resp.status, resp.reason, out, data
        finally:
            conn.close()

    # S3 conveniences (when in front of an S3Server) -----------------------------
    def options(self, *, max_attempts: int = 5, **extra: Any) -> dict[str, Any]:
        """s3fs storage options that go through the proxy (retries: ``max_attempts``)."""
        return _s3_options(self.endpoint_url, max_attempts, **extra)

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.options()

    def fs(self, **extra: Any) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.options(**extra))

    def make_bucket(self, prefix: str = "test") -> str:
        assert self.s3 is not None, "proxy is not in front of an S3Server"
        return self.s3.make_bucket(prefix)

    url = staticmethod(S3Server.url)


# --------------------------------------------------------------------------- plain HTTP files


class _FileHandler(_Handler):
    server: _Server

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        srv: HTTPFileServer = self.server.owner
        urlpath = unquote(urlsplit(self.path).path)
        rng = self.headers.get("Range")
        srv.requests.append((self.command, urlpath, rng))
        target = (srv.root / urlpath.lstrip("/")).resolve()
        if not target.is_relative_to(srv.root.resolve()) or not target.exists():
            self.send_bytes(404, b"not found", {"Content-Type": "text/plain"}, head=head)
            return
        if target.is_dir():
            self.send_bytes(200, self._listing(srv, target, urlpath),
                            {"Content-Type": "text/html; charset=utf-8"}, head=head)
            return
        data = target.read_bytes()
        size = len(data)
        common = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                  "ETag": f'"{hashlib.md5(data).hexdigest()}"'}
        if rng:
            span = _parse_range(rng, size)
            if span is None:
                self.send_bytes(416, b"", {**common, "Content-Range": f"bytes */{size}"},
                                head=head)
                return
            start, end = span
            self.send_bytes(206, data[start:end + 1],
                            {**common, "Content-Range": f"bytes {start}-{end}/{size}"}, head=head)
            return
        self.send_bytes(200, data, common, head=head)

    @staticmethod
    def _listing(srv: HTTPFileServer, folder: Path, urlpath: str) -> bytes:
        base = "/" + urlpath.strip("/") + "/" if urlpath.strip("/") else "/"
        items = []
        for child in sorted(folder.iterdir()):
            name = child.name + ("/" if child.is_dir() else "")
            href = html.escape(quote(base + name), quote=True)
            items.append(f'<li><a href="{href}">{html.escape(name)}</a></li>')
        return ("<!DOCTYPE html><html><body><ul>" + "".join(items)
                + "</ul></body></html>").encode()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single ``bytes=`` range, None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if not first:  # suffix: the last N bytes
        n = int(last)
        return (max(size - n, 0), size - 1) if n > 0 and size > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start < size and start <= end else None


class HTTPFileServer:
    """Serves ``root`` over HTTP/1.1 on 127.0.0.1: GET/HEAD, single Range, directory listings."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str, str | None]] = []
        self._server: _Server | None = None

    def start(self) -> HTTPFileServer:
        self._server = _Server(_FileHandler, self)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> HTTPFileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.port

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, relpath: str = "") -> str:
        return f"{self.base_url}/{relpath.lstrip('/')}"

    def write(self, relpath: str, data: bytes) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def write_lfs_pointer(self, relpath: str, data: bytes | None = None, *,
                          oid: str | None = None, size: int | None = None) -> Path:
        """Write, at ``relpath``, the Git LFS pointer that stands for ``data`` (not the data)."""
        return self.write(relpath, lfs_pointer(data, oid=oid, size=size))


# --------------------------------------------------------------------------- fixtures


_SHARED_S3: list[S3Server] = []


def _stop_shared_s3() -> None:
    while _SHARED_S3:
        _SHARED_S3.pop().stop()


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """One moto S3 server for the whole session; make a fresh bucket per test (make_bucket()).

    A fixture imported into several test modules is registered once per module, so a plain
    session fixture would start one server per module; this one shares a single server and
    stops it when the session ends.
    """
    if not _SHARED_S3:
        _SHARED_S3.append(S3Server().start())
        request.config.add_cleanup(_stop_shared_s3)
    return _SHARED_S3[0]


@pytest.fixture
def faulty_s3(s3_server: S3Server) -> Iterator[FaultyProxy]:
    """A fault-injecting proxy in front of ``s3_server``; starts healthy (fail_rate 0)."""
    with FaultyProxy(s3_server.endpoint_url, s3=s3_server) as proxy:
        yield proxy


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[HTTPFileServer]:
    """An HTTP server over a fresh temp folder (``http_files.root``)."""
    with HTTPFileServer(tmp_path / "http-root") as server:
        yield server


# hf_hub and the FTP fixtures are defined in servers_hf.py and servers_ftp.py, re-exported here.
_ = (hf_hub, ftp_files, ftps_files, FTPServer, self_signed_pem)
