"""Every source ``copy`` names works, and every failure says what happened.

Against real servers on 127.0.0.1: a plain HTTP folder whose listing carries no sizes, FTP and
FTPS (pyftpdlib, a self-signed certificate trusted through SSL_CERT_FILE), Git repositories
(a bare repository made with the git CLI, reached over ``file://``: ``git+https://`` and
``git+ssh://`` take the same path, shown by the URL parsing test, but no HTTPS or SSH git
server runs here), the Hub stand-in; and a port nothing listens on.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import files_of, ipython_shell
from servers import (
    FTPServer,
    HTTPFileServer,
    HubServer,
    free_port,
    ftp_files,
    ftps_files,
    lfs_pointer,
)

from ckpt_notebook.errors import CheckpointNotFoundError, CkptError
from ckpt_notebook.manager.copying import copy
from ckpt_notebook.manager.gitsource import parse_git_url
from ckpt_notebook.storage import Store

FIXTURES = (ftp_files, ftps_files)  # used by name below (http_files, hf_hub: conftest.py)


def data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


FILES = {"a.txt": b"hello", "sub/b.bin": data(300_000, 1), "sub/deep/c.json": b'{"c": 3}'}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


# -- plain HTTP folders --------------------------------------------------------------------------
def test_http_folder_without_sizes_in_listing(http_files: HTTPFileServer, store: Store,
                                              tmp_path: Path) -> None:
    for rel, content in FILES.items():
        http_files.write(f"cache/{rel}", content)
    info = copy(http_files.url("cache/"), "from-http", store=store)
    assert info.logical_bytes == sum(len(v) for v in FILES.values())
    assert files_of(store, "from-http", tmp_path / "out") == FILES
    assert store.verify("from-http") == []


# -- FTP, FTPS ----------------------------------------------------------------------------------
def test_ftp_folder_read_in_parallel(ftp_files: FTPServer, store: Store, tmp_path: Path) -> None:
    many = {**FILES, **{f"many/{i:02d}.bin": data(70_000 + i, i) for i in range(24)}}
    for rel, content in many.items():
        ftp_files.write(f"cache/{rel}", content)
    copy(ftp_files.url("cache/"), "from-ftp", store=store)
    assert files_of(store, "from-ftp", tmp_path / "out") == many
    copy(ftp_files.url("cache/sub/b.bin"), "one-file", store=store)
    assert files_of(store, "one-file", tmp_path / "one") == {"b.bin": FILES["sub/b.bin"]}


def test_ftp_file_past_the_inline_limit(ftp_files: FTPServer, store: Store,
                                        tmp_path: Path) -> None:
    """Streamed in two passes (hash, then write): two opens, each on a free connection."""
    from ckpt_notebook.storage.blobs import INLINE_LIMIT

    big = {"big.bin": data(INLINE_LIMIT + 12_345, 7), "small.txt": b"s"}
    for rel, content in big.items():
        ftp_files.write(f"large/{rel}", content)
    copy(ftp_files.url("large/"), "large", store=store)
    assert files_of(store, "large", tmp_path / "out") == big


def test_ftps_folder(ftps_files: FTPServer, store: Store, tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    for rel, content in FILES.items():
        ftps_files.write(f"cache/{rel}", content)
    assert ftps_files.url().startswith("ftps://")
    # an untrusted certificate is refused, and says so
    with pytest.raises(CkptError, match="certificate was refused") as err:
        copy(ftps_files.url("cache/"), "untrusted", store=store)
    assert "SSL_CERT_FILE" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(ftps_files.certfile))
    copy(ftps_files.url("cache/"), "from-ftps", store=store)
    assert files_of(store, "from-ftps", tmp_path / "out") == FILES


# -- ~ and $VAR ---------------------------------------------------------------------------------
def write_folder(folder: Path) -> None:
    for rel, content in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content)


def test_home_and_variables_expand_in_the_api(store: Store, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELS_DIR", str(tmp_path / "home" / "work"))
    write_folder(tmp_path / "home" / "work" / "models")
    copy("~/work/models", "tilde", store=store)
    copy("$MODELS_DIR/models", "dollar", store=store)
    copy("${MODELS_DIR}/models/sub", "braces", store=store)
    assert files_of(store, "tilde", tmp_path / "t") == FILES
    assert files_of(store, "dollar", tmp_path / "d") == FILES
    assert files_of(store, "braces", tmp_path / "b") == {
        k.removeprefix("sub/"): v for k, v in FILES.items() if k.startswith("sub/")}


def test_home_and_variables_expand_in_the_cli(store: Store, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_notebook.cli import main

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORK", str(tmp_path / "home" / "work"))
    write_folder(tmp_path / "home" / "work" / "models")
    # quoted in a shell, the CLI gets the text unexpanded
    assert main(["--store", str(store.url), "copy", "~/work/models", "--name", "tilde"]) == 0
    assert main(["--store", str(store.url), "copy", "$WORK/models", "--name", "dollar"]) == 0
    assert files_of(store, "dollar", tmp_path / "d") == FILES
    assert files_of(store, "tilde", tmp_path / "t") == FILES


def test_home_and_variables_expand_in_the_magic(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_notebook.ui import session as session_mod

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORK", str(tmp_path / "home" / "work"))
    write_folder(tmp_path / "home" / "work" / "models")
    store = Store(tmp_path / "store")
    copy(tmp_path / "home" / "work" / "models", "seed", store=store)  # a store, not a typo
    shell = ipython_shell()
    shell.run_line_magic("load_ext", "ckpt_notebook")
    session_mod._SESSIONS.pop(id(shell), None)
    try:
        shell.run_line_magic("checkpoint", f"store {tmp_path / 'store'}")
        shell.run_line_magic("checkpoint", "copy ~/work/models --name tilde")
        shell.run_line_magic("checkpoint", "copy $WORK/models/sub --name dollar")
    finally:
        old = session_mod._SESSIONS.pop(id(shell), None)
        if old is not None:
            old.close()
    assert files_of(store, "tilde", tmp_path / "t") == FILES
    assert set(files_of(store, "dollar", tmp_path / "d")) == {"b.bin", "deep/c.json"}


def test_home_expands_for_a_hub_upload(store: Store, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import ckpt_notebook

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_folder(tmp_path / "home" / "work" / "models")
    dry = ckpt_notebook.copy("~/work/models", to="hf://owner/repo", store=store, dry_run=True)
    assert sorted(dry.files) == sorted(FILES)  # type: ignore[union-attr]


def test_unset_variable_is_named(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VAR_CKPT", raising=False)
    with pytest.raises(CheckpointNotFoundError, match=r"\$NO_SUCH_VAR_CKPT is not set"):
        copy("$NO_SUCH_VAR_CKPT/models", "x", store=store)
    monkeypatch.setenv("SET_VAR_CKPT", "/nonexistent")
    with pytest.raises(CheckpointNotFoundError) as err:
        copy("$SET_VAR_CKPT/models", "x", store=store)
    assert "'/nonexistent/models'" in str(err.value) and "not set" not in str(err.value)


# -- Git ----------------------------------------------------------------------------------------
def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                               "HOME": str(cwd), "PATH": "/usr/bin:/bin"}).stdout


@pytest.fixture
def bare_repo(tmp_path: Path) -> Path:
    """A bare repository with ``main`` (FILES plus a later commit) and a ``stable`` branch."""
    if shutil.which("git") is None:
        pytest.skip("needs the git command")
    work = tmp_path / "git-work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    write_folder(work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    git("branch", "stable", cwd=work)
    (work / "later.txt").write_bytes(b"later")
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "second", cwd=work)
    bare = tmp_path / "repo.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    return bare


def test_git_repository_source(bare_repo: Path, store: Store, tmp_path: Path) -> None:
    url = f"git+{bare_repo.as_uri()}"
    info = copy(url, "from-git", store=store)
    assert info.source == url
    assert files_of(store, "from-git", tmp_path / "main") == {**FILES, "later.txt": b"later"}
    copy(f"{url}@stable", "stable", store=store)
    assert files_of(store, "stable", tmp_path / "stable") == FILES
    with pytest.raises(CkptError, match="no-such-branch") as err:
        copy(f"{url}@no-such-branch", "nope", store=store)
    assert "\n" not in str(err.value)
    assert not store.exists("nope")


def test_git_lfs_pointer_in_repository_is_refused(tmp_path: Path, store: Store) -> None:
    if shutil.which("git") is None:
        pytest.skip("needs the git command")
    work = tmp_path / "lfs-work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "model.safetensors").write_bytes(lfs_pointer(data(10_000, 2)))
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "pointer", cwd=work)
    with pytest.raises(CkptError, match="Git LFS pointer") as err:
        copy(f"git+{work.as_uri()}", "lfs", store=store)
    assert "git lfs install" in str(err.value)
    assert not store.exists("lfs")


@pytest.mark.parametrize(("url", "remote", "rev"), [
    ("git+https://example.org/o/r.git", "https://example.org/o/r.git", None),
    ("git+https://example.org/o/r.git@v1.2", "https://example.org/o/r.git", "v1.2"),
    ("git+ssh://git@example.org/o/r.git", "ssh://git@example.org/o/r.git", None),
    ("git+ssh://git@example.org/o/r.git@feature/x", "ssh://git@example.org/o/r.git",
     "feature/x"),
    ("git+file:///srv/r.git@main", "file:///srv/r.git", "main"),
])
def test_git_url_parsing(url: str, remote: str, rev: str | None) -> None:
    assert parse_git_url(url) == (remote, rev)


@pytest.mark.parametrize("url", ["git+ext::sh -c touch% /tmp/x://h/r", "git+https://h/r@-oX",
                                 "git+https://h/r.git@", "git+https:///"])
def test_bad_git_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="bad git URL"):
        parse_git_url(url)


# -- unreachable hosts --------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["http", "https", "ftp", "git+https"])
def test_unreachable_host_says_so(scheme: str, store: Store) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}/cache/"
    with pytest.raises(CkptError, match=r"cannot connect to 127\.0\.0\.1") as err:
        copy(url, "x", store=store)
    assert "not found" not in str(err.value) and "\n" not in str(err.value)


# -- Git LFS pointers on restore ----------------------------------------------------------------
def test_restore_http_lfs_pointer(http_files: HTTPFileServer, tmp_path: Path) -> None:
    from conftest import mlp

    from ckpt_notebook import Checkpointer

    http_files.write_lfs_pointer("w/model.safetensors", data(50_000, 4))
    ckpt = Checkpointer(tmp_path / "store", model=mlp(0))
    with pytest.raises(CkptError, match="Git LFS pointer") as err:
        ckpt.restore(http_files.url("w/model.safetensors"))
    assert "unpickling" not in str(err.value)


@pytest.fixture
def hub(hf_hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    hf_hub.patch(monkeypatch, tmp_path / "hf")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return hf_hub


def test_restore_hf_lfs_pointer(hub: HubServer, tmp_path: Path) -> None:
    from conftest import mlp

    from ckpt_notebook import Checkpointer

    hub.add_file("owner/repo", "model.safetensors", data(50_000, 5), lfs=True)
    hub.serve_as_pointer("owner/repo", "model.safetensors")
    ckpt = Checkpointer(tmp_path / "store", model=mlp(0))
    with pytest.raises(CkptError, match="Git LFS pointer") as err:
        ckpt.restore("hf://owner/repo/model.safetensors")
    assert "unpickling" not in str(err.value) and "hf:// URL" not in str(err.value)


def test_hf_lfs_advice_does_not_suggest_hf_url(hub: HubServer, store: Store) -> None:
    hub.add_file("owner/repo", "model.safetensors", data(50_000, 6), lfs=True)
    hub.serve_as_pointer("owner/repo", "model.safetensors")
    with pytest.raises(CkptError, match="Git LFS pointer") as err:
        copy("hf://owner/repo", "broken", store=store)
    assert "hf:// URL" not in str(err.value)
