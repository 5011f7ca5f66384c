"""FTP and FTPS servers on 127.0.0.1 for tests (pyftpdlib), re-exported by servers.py."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["FTPServer", "ftp_files", "ftps_files", "self_signed_pem"]

HOST = "127.0.0.1"


class FTPServer:
    """pyftpdlib serving ``root`` read-only to anonymous users on 127.0.0.1 (FTPS: ``tls=True``,
    with a self-signed certificate for 127.0.0.1 made here, at ``.certfile``).

    Runs its IO loop in a daemon thread, one poll at a time so :meth:`stop` can end it (the
    pattern pyftpdlib's own tests use). ``.url(relpath)`` is ``ftp://`` or ``ftps://``.
    """

    def __init__(self, root: str | os.PathLike[str], *, tls: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.certfile: Path | None = None
        self._server: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> FTPServer:
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
        from pyftpdlib.servers import FTPServer as _PyFTPServer

        authorizer = DummyAuthorizer()
        authorizer.add_anonymous(str(self.root))
        base: Any = TLS_FTPHandler if self.tls else FTPHandler
        attrs: dict[str, Any] = {"authorizer": authorizer, "banner": "test ftp"}
        if self.tls:
            self.certfile = self.root.parent / f"ftps-{uuid.uuid4().hex[:8]}.pem"
            self.certfile.write_bytes(self_signed_pem(HOST))
            attrs["certfile"] = str(self.certfile)
        handler = type("Handler", (base,), attrs)
        quiet = logging.getLogger("pyftpdlib")  # a handler: pyftpdlib then adds none of its own
        quiet.setLevel(logging.WARNING)
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
        self._server = _PyFTPServer((HOST, 0), handler)
        self._thread = threading.Thread(target=self._loop, name="FTPServer", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():  # serve_forever would log "starting" on every turn
            self._server.ioloop.loop(timeout=0.01, blocking=False)
        self._server.close_all()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.address[1])

    def url(self, relpath: str = "") -> str:
        scheme = "ftps" if self.tls else "ftp"
        return f"{scheme}://{HOST}:{self.port}/{relpath.lstrip('/')}"

    def write(self, relpath: str, data: bytes) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def self_signed_pem(host: str) -> bytes:
    """A private key and a self-signed certificate for ``host`` (an IP address), one PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
            + cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def ftp_files(tmp_path: Path) -> Iterator[FTPServer]:
    """An anonymous FTP server over a fresh temp folder (``ftp_files.root``)."""
    with FTPServer(tmp_path / "ftp-root") as server:
        yield server


@pytest.fixture
def ftps_files(tmp_path: Path) -> Iterator[FTPServer]:
    """The same over explicit TLS (``ftps://``); its certificate is at ``.certfile``."""
    with FTPServer(tmp_path / "ftps-root", tls=True) as server:
        yield server
