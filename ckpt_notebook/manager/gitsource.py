"""Git repositories as a copy source: ``git+https://``, ``git+ssh://``, ``git+file://``,
optionally ``@REV`` (a branch, tag or commit), as pip spells them.

The repository is fetched with the git command, one commit deep (``git init``, ``git fetch
--depth 1 URL REV``, ``git checkout FETCH_HEAD``: the form that takes a commit as well as a
branch or tag), into a temporary folder that is copied as a local folder without ``.git``
and removed afterwards. Git does the transport, so its credentials, SSH keys and proxies
apply; it never prompts (GIT_TERMINAL_PROMPT=0). fsspec's ``git`` filesystem was not used:
it needs pygit2 and reads only repositories already on disk.

Files that are Git LFS pointers (a clone without Git LFS installed) are refused when read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..errors import (
    InvalidArgumentError,
    SourceError,
    SourceNotFoundError,
    StoreError,
    UnsupportedSourceError,
)
from .sources import Source, _local_source, lfs_advice

if TYPE_CHECKING:
    from .archives import ArchiveLimits

__all__ = ["git_source", "parse_git_url"]

# git's transports that only fetch; never ext:: (runs a command) or other helpers
_SCHEMES = ("https", "http", "ssh", "git", "file")


def parse_git_url(url: str) -> tuple[str, str | None]:
    """``git+SCHEME://HOST/PATH[@REV]`` -> (``SCHEME://HOST/PATH``, REV or None)."""
    parts = urlsplit(url.removeprefix("git+"))
    path, rev = parts.path, None
    if "@" in path:
        path, rev = path.rsplit("@", 1)
    if parts.scheme not in _SCHEMES or not path.strip("/") or rev == "" or \
            (rev or "").startswith("-"):
        raise InvalidArgumentError(f"bad git URL {url!r}", url=url,
                                   hint="use git+https://host/owner/repo.git[@REV] (or "
                                        "git+ssh://, git+file://)")
    return urlunsplit(parts._replace(path=path, fragment="")), rev


def git_source(url: str, limits: ArchiveLimits | None = None) -> Source:
    remote, rev = parse_git_url(url)
    git = shutil.which("git")
    if git is None:
        raise UnsupportedSourceError(f"cannot copy {url!r}: git sources need the git command",
                                     url=url, hint="install git")
    folder = tempfile.mkdtemp(prefix="ckpt-git-")
    try:
        _git(git, url, "init", "-q", folder)
        _git(git, url, "-C", folder, "fetch", "-q", "--depth", "1", "--no-tags", remote,
             rev or "HEAD")
        _git(git, url, "-C", folder, "-c", "advice.detachedHead=false", "checkout", "-q",
             "FETCH_HEAD")
        if os.listdir(folder) == [".git"]:
            raise SourceError(f"nothing to copy: {url!r} holds no files", url=url)
        source = _local_source(folder, None, Path(folder, ".git").resolve(), limits)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    source.description = url
    advice = lfs_advice(url)
    for f in source.files:
        f.check_lfs, f.lfs_advice, f.local_path = True, advice, None
    source.cleanup.append(lambda: shutil.rmtree(folder, ignore_errors=True))
    return source


def _git(git: str, url: str, *args: str) -> None:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run([git, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, check=False)
    if done.returncode == 0:
        return
    verb = next(a for a in ("init", "fetch", "checkout") if a in args)
    lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
    why = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))),
               lines[-1] if lines else f"exit status {done.returncode}")
    if any(sign in done.stderr for sign in _UNREACHABLE):
        host = urlsplit(url.removeprefix("git+")).netloc.rpartition("@")[2]
        raise StoreError(f"cannot connect to {host} to read {url!r} (git {verb}: {why})",
                         url=url, hint="check the address and that the server is running")
    error = SourceNotFoundError if "couldn't find remote ref" in why else StoreError
    raise error(f"cannot copy {url!r}: git {verb} failed: {why}", url=url)


# what git (curl, ssh) says when the host cannot be reached at all
_UNREACHABLE = ("Could not resolve host", "Could not resolve hostname", "Couldn't connect",
                "Connection refused", "Connection timed out", "No route to host")
