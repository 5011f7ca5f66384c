"""Google Cloud Storage and Azure Blob servers on 127.0.0.1 for tests, like ``s3_server``.

``gcs_server`` (session)    gcp-storage-emulator (in memory), reached through gcsfs
``azure_server`` (session)  Azurite's blob service (in memory), reached through adlfs; the
    ``azurite-blob`` command comes from npm: ``make test`` installs it under ``.azurite/``
    (or put one on PATH)

Both offer ``.make_bucket()`` (a fresh bucket / container), ``.url(bucket, path)`` and
``.storage_options`` (with ``skip_instance_cache=True``, as for S3).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from servers import stop_process

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")  # Azurite's published development key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class _Process:
    """A server subprocess that is up once its port accepts connections."""

    name = "server"

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Any:
        self.port = _free_port()
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not start on {HOST}:{self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None


class GCSServer(_Process):
    name = "gcp-storage-emulator"

    def command(self) -> list[str]:
        exe = Path(sys.executable).with_name("gcp-storage-emulator")
        return [str(exe), "start", "--host", HOST, "--port", str(self.port), "--in-memory"]

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint_url, "token": "anon", "skip_instance_cache": True}

    def make_bucket(self, prefix: str = "test") -> str:
        import gcsfs

        name = f"{prefix.lower()[:40]}-{uuid.uuid4().hex[:12]}"
        gcsfs.GCSFileSystem(**self.storage_options).mkdir(name)
        return name

    @staticmethod
    def url(bucket: str, path: str = "") -> str:
        return f"gs://{bucket}/{path}" if path else f"gs://{bucket}"


def azurite_command() -> str:
    found = REPO / ".azurite" / "node_modules" / ".bin" / "azurite-blob"
    if found.exists():
        return str(found)
    on_path = shutil.which("azurite-blob")
    if on_path is None:
        raise RuntimeError("azurite-blob is not installed: `make test` installs it under "
                           ".azurite/ (npm install --prefix .azurite azurite)")
    return on_path


class AzureServer(_Process):
    name = "azurite-blob"

    def command(self) -> list[str]:
        return [azurite_command(), "--blobHost", HOST, "--blobPort", str(self.port),
                "--inMemoryPersistence", "--skipApiVersionCheck", "--silent"]

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                f"AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://{HOST}:{self.port}/{AZURITE_ACCOUNT};")

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"connection_string": self.connection_string, "skip_instance_cache": True}

    def make_bucket(self, prefix: str = "test") -> str:
        from azure.storage.blob import BlobServiceClient

        name = f"{prefix.lower()[:40]}-{uuid.uuid4().hex[:12]}"
        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)
        return name

    @staticmethod
    def url(bucket: str, path: str = "") -> str:
        return f"az://{bucket}/{path}" if path else f"az://{bucket}"


_SHARED: dict[str, Any] = {}


def _shared(request: pytest.FixtureRequest, key: str, cls: type[_Process]) -> Any:
    if key not in _SHARED:
        _SHARED[key] = cls().start()
        request.config.add_cleanup(lambda: _SHARED.pop(key).stop())
    return _SHARED[key]


@pytest.fixture(scope="session")
def gcs_server(request: pytest.FixtureRequest) -> GCSServer:
    # gcsfs's default filesystem first asks the bucket's layout over gRPC, which an emulator
    # does not speak: each call would wait out a 60 s timeout before falling back.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    return _shared(request, "gcs", GCSServer)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def azure_server(request: pytest.FixtureRequest) -> AzureServer:
    return _shared(request, "azure", AzureServer)  # type: ignore[no-any-return]
