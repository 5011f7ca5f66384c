"""Archive bombs: limits on extracted size, compression ratio and entry count.

Each archive is made here, small, under ``tmp_path``; limits are lowered (``archive_limits=``)
so that a bomb stays a few MiB. A refusal is one line that names the limit, the numbers and
the option that raises it, and commits nothing. Compressed tars stream: no temp copy.
"""

from __future__ import annotations

import io
import struct
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import blake3
import pytest
from conftest import ipython_shell

from ckpt_notebook.cli import main
from ckpt_notebook.errors import UnsafeFileError
from ckpt_notebook.manager import copying, materializing
from ckpt_notebook.storage import Store
from ckpt_notebook.storage import blobs as blobs_module

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def random_bytes(n: int, seed: int = 0) -> bytes:
    return blake3.blake3(str(seed).encode()).digest(length=n)


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def tar_of(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def lying_zip(path: Path, size: int) -> Path:
    """One member of ``size`` zero bytes whose headers claim it is stored 1:1 (its compressed
    size patched to equal its size), so that its ratio looks harmless on paper."""
    zip_of(path, {"zeros.bin": bytes(size)})
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"PK\x03\x04"
    raw[18:22] = struct.pack("<I", size)  # local header: compressed size
    central = raw.rindex(b"PK\x01\x02")
    raw[central + 20:central + 24] = struct.pack("<I", size)  # central directory
    path.write_bytes(bytes(raw))
    return path


def sparse_tar(path: Path, realsize: int, *, compress: bool = False) -> Path:
    """A GNU sparse member: 512 bytes stored, ``realsize`` bytes once its holes are filled
    (tarfile cannot write these, so the header is made by hand)."""
    info = tarfile.TarInfo("sparse.bin")
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 512
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:410] = b"%011o\0%011o\0" % (0, 512)  # one data chunk: offset 0, 512 bytes
    header[483:495] = b"%011o\0" % realsize  # the size once the holes are filled
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    body = bytes(header) + b"x" * 512 + bytes(1024)  # data, then the end-of-archive blocks
    if compress:
        import gzip

        body = gzip.compress(body)
    path.write_bytes(body)
    return path


def refused(archive: Path, store: Path, limits: dict[str, Any] | None, *words: str) -> str:
    extra = {} if limits is None else {"archive_limits": limits}  # None: the defaults
    with pytest.raises(UnsafeFileError) as caught:
        copying.copy(archive, "bomb", store=str(store), **extra)
    message = str(caught.value)
    assert "\n" not in message and archive.name in message, message
    for word in words:
        assert word in message, message
    assert not store.exists() or Store(str(store)).list() == []  # nothing committed
    return message


# -- the bombs of issue 11 ---------------------------------------------------------------------
def test_a_zip_that_inflates_past_the_size_limit_is_refused(tmp_path: Path) -> None:
    archive = zip_of(tmp_path / "big.zip", {f"part{i}.bin": bytes(3 * MiB) for i in range(3)})
    assert archive.stat().st_size < 64 << 10
    refused(archive, tmp_path / "store", {"size": "8M", "ratio": 10**6},
            "9.0 MiB", "8.0 MiB", "--archive-limit size=")


def test_a_high_ratio_zip_is_refused_by_default(tmp_path: Path) -> None:
    archive = zip_of(tmp_path / "ratio.zip", {"ok.txt": b"fine", "zeros.bin": bytes(20 * MiB)})
    refused(archive, tmp_path / "store", None, "zeros.bin", "ratio", "--archive-limit ratio=")


def test_too_many_entries_are_refused(tmp_path: Path) -> None:
    members = {f"f{i}.txt": b"%d" % i for i in range(50)}
    for archive in (zip_of(tmp_path / "many.zip", members),
                    tar_of(tmp_path / "many.tgz", members)):
        refused(archive, tmp_path / "store", {"entries": 20}, "20 entries",
                "--archive-limit entries=")


def test_a_member_lying_about_its_compressed_size_is_judged_by_its_real_one(
        tmp_path: Path) -> None:
    archive = lying_zip(tmp_path / "liar.zip", 20 * MiB)
    refused(archive, tmp_path / "store", None, "zeros.bin", "ratio")


@pytest.mark.parametrize("compress", [False, True])
def test_a_sparse_tar_member_is_limited(tmp_path: Path, compress: bool) -> None:
    archive = sparse_tar(tmp_path / ("sparse.tar.gz" if compress else "sparse.tar"),
                         4 << 30, compress=compress)
    assert archive.stat().st_size < 4096
    refused(archive, tmp_path / "store", {"size": "16M"}, "sparse.bin", "4.0 GiB")
    refused(archive, tmp_path / "store", {"size": "8G"}, "sparse.bin", "ratio")


def test_a_tar_gz_bomb_is_refused_before_it_is_decompressed(tmp_path: Path) -> None:
    archive = tar_of(tmp_path / "bomb.tar.gz", {"a.txt": b"a", "zeros.bin": bytes(40 * MiB)})
    refused(archive, tmp_path / "store", {"size": "16M", "ratio": 10**6}, "zeros.bin",
            "40.0 MiB", "16.0 MiB")
    refused(archive, tmp_path / "store", None, "ratio")


# -- raising a limit, on purpose ----------------------------------------------------------------
def test_raising_the_limit_lets_the_archive_through(tmp_path: Path) -> None:
    store = tmp_path / "store"
    zeros = bytes(20 * MiB)
    archive = zip_of(tmp_path / "ratio.zip", {"zeros.bin": zeros})
    copying.copy(archive, "zeros", store=str(store), archive_limits={"ratio": 5000})
    out = materializing.materialize("zeros", tmp_path / "out", store=str(store))
    assert (out / "zeros.bin").read_bytes() == zeros
    sparse = sparse_tar(tmp_path / "sparse.tar", 1 * MiB)
    copying.copy(sparse, "sparse", store=str(store), archive_limits={"ratio": 10_000})
    out = materializing.materialize("sparse", tmp_path / "out2", store=str(store))
    assert (out / "sparse.bin").read_bytes() == b"x" * 512 + bytes(MiB - 512)


def test_the_cli_flag_raises_a_limit_and_the_refusal_names_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = zip_of(tmp_path / "ratio.zip", {"zeros.bin": bytes(20 * MiB)})
    store = str(tmp_path / "store")
    assert main(["copy", str(archive), "--name", "z", "--store", store]) != 0
    err = capsys.readouterr().err.strip()
    assert "--archive-limit ratio=" in err and len(err.splitlines()) == 1, err
    assert main(["copy", str(archive), "--name", "z", "--store", store,
                 "--archive-limit", "ratio=5000", "--archive-limit", "size=1G"]) == 0
    with pytest.raises(SystemExit):  # a usage error, before anything is read
        main(["copy", str(archive), "--name", "y", "--store", store,
              "--archive-limit", "speed=3"])
    assert "size, ratio, entries" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"size": "-1"}, {"ratio": 0}, {"entries": "x"}, {"depth": 3}])
def test_bad_limits_are_refused_plainly(tmp_path: Path, bad: dict[str, Any]) -> None:
    archive = zip_of(tmp_path / "a.zip", {"a.txt": b"a"})
    with pytest.raises(ValueError, match="archive limit"):
        copying.copy(archive, "a", store=str(tmp_path / "store"), archive_limits=bad)


# -- streaming -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.bz2"])
def test_compressed_tars_stream_without_a_temp_copy(tmp_path: Path, suffix: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Members are read in order from the decompressed stream; a member put_file reads twice
    (hash, then write) is read again from a second reader, and the archive is decompressed
    by at most three readers in all (the listing and two cursors), never spooled."""
    monkeypatch.setattr(blobs_module, "INLINE_LIMIT", 4096)  # make every member "large"
    monkeypatch.setattr(copying, "INLINE_LIMIT", 4096)
    members = {f"d/m{i}.bin": random_bytes(1000 * i + 5000, seed=i) for i in range(12)}
    members["small.txt"] = b"tiny"
    archive = tar_of(tmp_path / f"m{suffix}", members, "w:" + suffix.rsplit(".", 1)[1])

    def no_spool(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a temp copy of the archive's contents was made")

    opened = []
    real_open = tarfile.open

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", no_spool)
    monkeypatch.setattr(tarfile, "open", counting_open)
    store = tmp_path / "store"
    copying.copy(archive, "streamed", store=str(store))
    out = materializing.materialize("streamed", tmp_path / "out", store=str(store))
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and not p.name.startswith(".")} == members
    assert len(opened) <= 4, opened  # "r:" tried first, then the listing, then two cursors


def test_the_magic_takes_the_same_flag(tmp_path: Path) -> None:
    from IPython.core.error import UsageError

    from ckpt_notebook.ui import session as session_mod

    ip = ipython_shell()
    ip.run_line_magic("load_ext", "ckpt_notebook")
    store = tmp_path / "store"
    ip.run_line_magic("checkpoint", f"store {store}")
    archive = zip_of(tmp_path / "ratio.zip", {"zeros.bin": bytes(20 * MiB)})
    try:
        with pytest.raises(UsageError, match="--archive-limit ratio="):
            ip.run_line_magic("checkpoint", f"copy {archive} --name z")
        ip.run_line_magic("checkpoint", f"copy {archive} --name z --archive-limit ratio=5000")
        assert Store(str(store)).info("z").kind == "files"
    finally:
        old = session_mod._SESSIONS.pop(id(ip), None)
        if old is not None:
            old.close()
