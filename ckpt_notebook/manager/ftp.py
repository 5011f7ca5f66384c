"""FTP and FTPS sources: fsspec's FTPFileSystem, with a connection of its own per open file.

fsspec's FTPFileSystem holds one ftplib connection, and FTP runs one transfer at a time on a
connection: files read in parallel through it read each other's replies ("unexpected
error_reply: 200 Type set to: Binary", "350 Restarting"). So each open file borrows a
connection from a small pool and gives it back when it is closed (a connection that failed
is closed instead); the listing keeps the first one.

``ftps://`` is explicit TLS (AUTH TLS, then PROT P for the data). ftplib does not verify the
server's certificate unless given a context that does, so the connection here is made with
``ssl.create_default_context()``: the system's trust store, which ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` extend (the way to trust a self-signed server).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from ftplib import FTP_TLS
from typing import Any, BinaryIO

from fsspec.implementations.ftp import FTPFileSystem

from ..errors import StoreError
from .sources import ReadStream

__all__ = ["PooledFTPFileSystem", "ftp_fs"]

BLOCK = 1 << 20  # read-ahead per request: fsspec's FTP file issues a RETR (+ABOR) per block


def ftp_fs(url: str, options: dict[str, Any]) -> tuple[PooledFTPFileSystem, str]:
    """The filesystem and path for an ``ftp://`` or ``ftps://`` URL."""
    tls = url.startswith("ftps://")
    plain = "ftp://" + url.split("://", 1)[1]
    kwargs = {**FTPFileSystem._get_kwargs_from_urls(plain), **options}
    if tls:
        kwargs["tls"] = True
    path = FTPFileSystem._strip_protocol(plain)
    try:
        return PooledFTPFileSystem(**kwargs), path
    except ssl.SSLCertVerificationError as err:
        raise StoreError(
            f"cannot open {url!r}: the server's certificate was refused ({err.verify_message})",
            url=url, hint="if it is self-signed, trust it with SSL_CERT_FILE=CERT.pem") from err
    except ssl.SSLError as err:
        raise StoreError(f"cannot open {url!r}: the TLS handshake failed ({err.reason or err})",
                         url=url) from err


class PooledFTPFileSystem(FTPFileSystem):
    """FTPFileSystem whose :meth:`open_for_reading` gives each open file its own connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, dict(kwargs)
        self._idle: list[PooledFTPFileSystem] = []
        self._all: list[PooledFTPFileSystem] = []
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _connect(self) -> None:
        if self.tls is not True:
            super()._connect()
            return
        self.ftp = FTP_TLS(context=ssl.create_default_context(),  # noqa: S321 (verified TLS)
                           timeout=self.timeout, encoding=self.encoding)
        self.ftp.connect(self.host, self.port)
        self.ftp.login(*self.cred)  # AUTH TLS first: the password travels encrypted

    def open_for_reading(self, path: str) -> BinaryIO:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = PooledFTPFileSystem(*self._args, **self._kwargs)
            with self._lock:
                self._all.append(conn)
        try:
            f = conn.open(path, "rb", block_size=BLOCK)
        except BaseException:
            self._give_back(conn, ok=False)
            raise
        return _Borrowed(f, lambda ok: self._give_back(conn, ok=ok))  # type: ignore[return-value]

    def _give_back(self, conn: PooledFTPFileSystem, *, ok: bool) -> None:
        if ok:
            with self._lock:
                self._idle.append(conn)
        else:
            with contextlib.suppress(Exception):
                conn.ftp.close()

    def close_connections(self) -> None:
        with self._lock:
            conns, self._all, self._idle = [*self._all, self], [], []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.ftp.close()


class _Borrowed(ReadStream):
    """An open FTP file on a borrowed connection, given back when closed."""

    def __init__(self, f: Any, give_back: Any) -> None:
        super().__init__()
        self.f, self.give_back, self.ok = f, give_back, True

    def read(self, n: int | None = -1) -> bytes:
        try:
            return bytes(self.f.read(-1 if n is None else n))
        except BaseException:
            self.ok = False
            raise

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.f.seek(offset, whence))

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self.f.close()
            self.give_back(self.ok)
        super().close()
