"""A loopback stand-in for the Hugging Face Hub, speaking the endpoints huggingface_hub uses.

``HubServer`` (fixture ``hf_hub``, function-scoped) keeps git-like repos in memory: branches and
tags point at commits, each commit holds a full snapshot of the files. It serves:

* repo info ``GET /api/{models,datasets,spaces}/NS/NAME[/revision/REV]`` (``repo_info``,
  ``model_info``, ``repo_exists``, ``HfFileSystem`` path resolution),
* ``GET .../tree/REV[/PATH]?recursive=&expand=`` (``list_repo_tree``, ``list_repo_files``,
  ``HfFileSystem.ls/find/walk/glob``), ``POST .../paths-info/REV`` (``get_paths_info``,
  ``HfFileSystem.info``), ``GET .../commits/REV``, ``GET .../refs``,
* ``GET|HEAD /[datasets/|spaces/]NS/NAME/resolve/REV/PATH`` with ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``/``X-Linked-Size`` (LFS files), ``Content-Length`` and ``Range``
  (``hf_hub_download``, ``HfFileSystem.open/cat/get``),
* writes: ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``.../preupload/REV``
  (always answers ``uploadMode: "regular"``, so no LFS or Xet transfer ever happens),
  ``.../commit/REV`` (NDJSON; inline base64 files, deletions, ``lfsFile`` for known objects,
  ``parentCommit`` checked, ``?create_pr=1``), ``.../branch/NAME``, ``.../tag/REV``,
  ``/api/whoami-v2``, ``/api/validate-yaml``.

No Xet: nothing the server sends carries ``X-Xet-Hash`` / ``xetHash`` and preupload never says
"lfs", so huggingface_hub (even with hf_xet installed, where ``upload_folder`` takes its
pipelined path) sends every file inline in the commit and downloads over plain HTTP.

Pointing huggingface_hub at it
------------------------------
In-process, pass the endpoint explicitly (reliable: every entry point takes it)::

    api = HfApi(endpoint=hf_hub.endpoint, token=hf_hub.token)          # or hf_hub.api()
    fs = HfFileSystem(endpoint=hf_hub.endpoint, token=hf_hub.token,
                      skip_instance_cache=True)                          # or hf_hub.fs()
    hf_hub_download(repo, "f.bin", endpoint=hf_hub.endpoint, token=hf_hub.token,
                    cache_dir=tmp_path / "hf-cache")
    fsspec.open("hf://owner/repo/f.bin", endpoint=..., token=..., skip_instance_cache=True)

For code under test that builds its own clients without an endpoint argument, call
``hf_hub.patch(monkeypatch, tmp_path)``: it sets HF_ENDPOINT / HF_TOKEN / HF_HOME /
HF_HUB_DISABLE_TELEMETRY in the environment *and* patches the values huggingface_hub computed
at import (``constants.ENDPOINT``, ``constants.HUGGINGFACE_CO_URL_TEMPLATE``, the cache and
token paths, offline mode); patching ``constants.ENDPOINT`` alone is not enough, because
``hf_hub_url`` builds URLs from ``HUGGINGFACE_CO_URL_TEMPLATE``. For a subprocess, pass
``env={**os.environ, **hf_hub.env(tmp_path)}`` (HF_ENDPOINT is read at import).

Test helpers: ``add_file(repo, path, data, revision="main", lfs=False)``, ``add_files``,
``files(repo, revision)``, ``head(repo, revision)``, ``commits(repo, revision)``,
``create_repo``, ``create_branch``, ``serve_as_pointer(repo, path)`` (the resolve URL then
answers the file's Git LFS pointer text instead of its content, as a broken mirror would),
``requests`` (method, path, status) and ``unhandled`` (requests no route knew).
Tokens accepted: ``hf_hub.tokens`` (``{"hf_test"}``); writes need one, reads of public repos do
not; a wrong token gets 401 "Invalid credentials in Authorization header".
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

HOST = "127.0.0.1"
TOKEN = "hf_test"
USER = "tester"
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:"
            f"{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n").encode()


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    lfs: frozenset[str]
    title: str
    message: str
    date: datetime


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    pointers: set[str] = field(default_factory=set)  # paths served as LFS pointer text
    next_pr: int = 1


class HubServer:
    """In-memory Hub on 127.0.0.1. See the module docstring."""

    def __init__(self) -> None:
        self.tokens = {TOKEN}
        self.token = TOKEN
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self.requests: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._server: Any = None

    # lifecycle ----------------------------------------------------------------
    def start(self) -> HubServer:
        from servers import _Server

        self._server = _Server(_handler_class(), self)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "hub not started"
        return int(self._server.port)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    # clients ------------------------------------------------------------------
    def api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token)

    def fs(self, **kwargs: Any) -> Any:
        from huggingface_hub import HfFileSystem

        return HfFileSystem(endpoint=self.endpoint, token=self.token, skip_instance_cache=True,
                            **kwargs)

    def env(self, home: str | os.PathLike[str]) -> dict[str, str]:
        """Environment for a subprocess that should talk to this hub (HF_HOME under ``home``)."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_TOKEN": self.token,
            "HF_HOME": str(Path(home) / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_OFFLINE": "0",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def patch(self, monkeypatch: pytest.MonkeyPatch, home: str | os.PathLike[str]) -> None:
        """Point this process's huggingface_hub (already imported or not) at the hub."""
        from huggingface_hub import HfFileSystem, constants

        env = self.env(home)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        hf_home = env["HF_HOME"]
        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            self.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {HOST})
        monkeypatch.setattr(constants, "HF_HOME", hf_home)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", os.path.join(hf_home, "hub"))
        monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", os.path.join(hf_home, "hub"))
        monkeypatch.setattr(constants, "HF_ASSETS_CACHE", os.path.join(hf_home, "assets"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.path.join(hf_home, "token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH",
                            os.path.join(hf_home, "stored_tokens"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        HfFileSystem.clear_instance_cache()

    # state helpers (for tests) ----------------------------------------------
    @staticmethod
    def _type(repo_type: str | None) -> str:
        return repo_type or "model"

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False,
                    exist_ok: bool = True) -> Repo:
        with self._lock:
            key = (self._type(repo_type), repo_id)
            if key in self.repos:
                if not exist_ok:
                    raise HubError(409, None, "You already created this model repo")
                return self.repos[key]
            repo = Repo(self._type(repo_type), repo_id, private=private)
            first = self._new_commit(repo, None, {}, frozenset(), "initial commit", "")
            repo.branches["main"] = first.oid
            self.repos[key] = repo
            return repo

    def _new_commit(self, repo: Repo, parent: str | None, files: dict[str, bytes],
                    lfs: frozenset[str], title: str, message: str) -> Commit:
        h = hashlib.sha1(usedforsecurity=False)
        h.update(f"{repo.repo_type}/{repo.repo_id}\0{parent}\0{title}\0{next(self._counter)}"
                 .encode())
        for path in sorted(files):
            h.update(path.encode() + b"\0" + git_blob_sha1(files[path]).encode())
        commit = Commit(h.hexdigest(), parent, files, lfs & set(files), title, message,
                        datetime.now(timezone.utc))
        repo.commits[commit.oid] = commit
        return commit

    def add_files(self, repo_id: str, files: dict[str, bytes], *, revision: str = "main",
                  repo_type: str = "model", lfs: bool = False,
                  message: str | None = None) -> str:
        """Commit ``files`` onto branch ``revision`` (created from main if new); returns the oid."""
        with self._lock:
            repo = self.create_repo(repo_id, repo_type=repo_type)
            if revision not in repo.branches:
                repo.branches[revision] = repo.branches["main"]
            head = repo.commits[repo.branches[revision]]
            snapshot = {**head.files, **files}
            lfs_paths = set(head.lfs) - set(files)
            if lfs:
                lfs_paths |= set(files)
                for data in files.values():
                    self.lfs_objects[hashlib.sha256(data).hexdigest()] = data
            commit = self._new_commit(repo, head.oid, snapshot, frozenset(lfs_paths),
                                      message or f"Add {', '.join(sorted(files))}", "")
            repo.branches[revision] = commit.oid
            return commit.oid

    def add_file(self, repo_id: str, path: str, data: bytes, *, revision: str = "main",
                 repo_type: str = "model", lfs: bool = False) -> str:
        return self.add_files(repo_id, {path: data}, revision=revision, repo_type=repo_type,
                              lfs=lfs)

    def files(self, repo_id: str, revision: str = "main", *,
              repo_type: str = "model") -> dict[str, bytes]:
        with self._lock:
            return dict(self._commit(self._repo(repo_type, repo_id), revision).files)

    def head(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        with self._lock:
            return self._commit(self._repo(repo_type, repo_id), revision).oid

    def commits(self, repo_id: str, revision: str = "main", *,
                repo_type: str = "model") -> list[Commit]:
        """Commits reachable from ``revision``, newest first."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            out, commit = [], self._commit(repo, revision)
            while True:
                out.append(commit)
                if commit.parent is None:
                    return out
                commit = repo.commits[commit.parent]

    def create_branch(self, repo_id: str, branch: str, revision: str = "main", *,
                      repo_type: str = "model") -> None:
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            repo.branches[branch] = self._commit(repo, revision).oid

    def serve_as_pointer(self, repo_id: str, path: str, *, repo_type: str = "model") -> None:
        """From now on, the resolve URL of ``path`` answers its LFS pointer text, not its bytes."""
        with self._lock:
            self._repo(repo_type, repo_id).pointers.add(path)

    # lookups ------------------------------------------------------------------
    def _repo(self, repo_type: str | None, repo_id: str) -> Repo:
        repo = self.repos.get((self._type(repo_type), repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo

    @staticmethod
    def _commit(repo: Repo, revision: str | None) -> Commit:
        rev = revision or "main"
        oid = repo.branches.get(rev) or repo.tags.get(rev)
        if oid is None and rev in repo.commits:
            oid = rev
        if oid is None and len(rev) >= 7:
            found = [c for c in repo.commits if c.startswith(rev.lower())]
            oid = found[0] if len(found) == 1 else None
        if oid is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo.commits[oid]

    def _last_commit(self, repo: Repo, commit: Commit, path: str) -> Commit:
        """The newest commit that changed ``path`` (a file, or anything below a folder)."""
        def view(c: Commit) -> dict[str, str]:
            return {p: git_blob_sha1(d) for p, d in c.files.items()
                    if p == path or p.startswith(path + "/")}

        current = commit
        while current.parent is not None:
            parent = repo.commits[current.parent]
            if view(parent) != view(current):
                return current
            current = parent
        return current


# --------------------------------------------------------------------------- HTTP side


def _file_entry(hub: HubServer, repo: Repo, commit: Commit, path: str,
                expand: bool) -> dict[str, Any]:
    data = commit.files[path]
    entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data)}
    if path in commit.lfs:
        pointer = _lfs_pointer(data)
        entry["oid"] = git_blob_sha1(pointer)
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                        "pointerSize": len(pointer)}
    else:
        entry["oid"] = git_blob_sha1(data)
    if expand:
        entry["lastCommit"] = _commit_ref(hub._last_commit(repo, commit, path))
    return entry


def _dir_entry(hub: HubServer, repo: Repo, commit: Commit, path: str,
               expand: bool) -> dict[str, Any]:
    inner = sorted((p, git_blob_sha1(d)) for p, d in commit.files.items()
                   if p.startswith(path + "/"))
    oid = hashlib.sha1(json.dumps(inner).encode(), usedforsecurity=False).hexdigest()
    entry: dict[str, Any] = {"type": "directory", "path": path, "oid": oid}
    if expand:
        entry["lastCommit"] = _commit_ref(hub._last_commit(repo, commit, path))
    return entry


def _commit_ref(commit: Commit) -> dict[str, str]:
    return {"id": commit.oid, "title": commit.title, "date": _iso(commit.date)}


def _dirs(files: dict[str, bytes]) -> set[str]:
    out: set[str] = set()
    for path in files:
        out.update(str(p) for p in PurePosixPath(path).parents if str(p) != ".")
    return out


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(400, None, f"Invalid path in repo: {path!r}")
    return path


class _HubHandlerMixin:
    """Routing and endpoint logic; mixed into the HTTP handler class built below."""

    hub: HubServer
    command: str
    path: str
    headers: Any

    def route(self) -> tuple[int, bytes, dict[str, str]]:
        parts = urlsplit(self.path)
        segs = parts.path.split("/")[1:]
        query = parse_qs(parts.query)
        if segs and segs[0] == "api":
            return self._api(segs[1:], query)
        kind = "model"
        if segs and segs[0] in ("datasets", "spaces"):
            kind, segs = _TYPES[segs[0]], segs[1:]
        if len(segs) >= 5 and segs[2] == "resolve" and self.command in ("GET", "HEAD"):
            repo_id = f"{unquote(segs[0])}/{unquote(segs[1])}"
            return self._resolve(kind, repo_id, unquote(segs[3]), unquote("/".join(segs[4:])))
        raise LookupError

    # auth ---------------------------------------------------------------------
    def _token(self, *, write: bool) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if token is not None and token not in self.hub.tokens:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if write and token is None:
            raise HubError(401, None, "You must be authenticated to perform this action")
        return token

    def _readable(self, repo: Repo) -> Repo:
        if repo.private and self._token(write=False) is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo

    # /api ---------------------------------------------------------------------
    def _api(self, segs: list[str], query: dict[str, list[str]]) -> tuple[int, bytes,
                                                                             dict[str, str]]:
        hub, m = self.hub, self.command
        if segs == ["whoami-v2"] and m == "GET":
            if self._token(write=False) is None:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            return _json({"type": "user", "name": USER, "fullname": "Test User", "orgs": [],
                          "auth": {"type": "access_token",
                                   "accessToken": {"displayName": "test", "role": "write"}}})
        if segs == ["validate-yaml"] and m == "POST":
            return _json({"errors": [], "warnings": []})
        if segs == ["repos", "create"] and m == "POST":
            return self._create_repo()
        if segs == ["repos", "delete"] and m == "DELETE":
            self._token(write=True)
            body = self.json_body()
            repo_id = f"{body.get('organization') or USER}/{body['name']}"
            with hub._lock:
                hub._repo(body.get("type"), repo_id)
                del hub.repos[(hub._type(body.get("type")), repo_id)]
            return _json({})
        if len(segs) < 3 or segs[0] not in _TYPES:
            raise LookupError
        kind = _TYPES[segs[0]]
        repo_id = f"{unquote(segs[1])}/{unquote(segs[2])}"
        action, rest = (segs[3] if len(segs) > 3 else None), segs[4:]
        rev = unquote(rest[0]) if rest else ""
        routes: dict[tuple[str | None, str], Any] = {
            (None, "GET"): lambda: self._info(kind, repo_id, None, query),
            ("revision", "GET"): lambda: self._info(kind, repo_id, rev, query),
            ("tree", "GET"): lambda: self._tree(kind, repo_id, rev,
                                                unquote("/".join(rest[1:])), query),
            ("paths-info", "POST"): lambda: self._paths_info(kind, repo_id, rev),
            ("commits", "GET"): lambda: self._commits(kind, repo_id, rev),
            ("refs", "GET"): lambda: self._refs(kind, repo_id),
            ("preupload", "POST"): lambda: self._preupload(kind, repo_id, rev),
            ("commit", "POST"): lambda: self._commit(kind, repo_id, rev, query),
            ("branch", "POST"): lambda: self._branch(kind, repo_id, unquote("/".join(rest))),
            ("branch", "DELETE"): lambda: self._branch(kind, repo_id, unquote("/".join(rest))),
            ("tag", "POST"): lambda: self._tag(kind, repo_id, rev),
        }
        handler = routes.get((action, m))
        if handler is None or (action not in (None, "refs") and not rest):
            raise LookupError
        with hub._lock:
            result: tuple[int, bytes, dict[str, str]] = handler()
            return result

    def _commits(self, kind: str, repo_id: str, rev: str) -> tuple[int, bytes, dict[str, str]]:
        self._readable(self.hub._repo(kind, repo_id))
        return _json([{"id": c.oid, "title": c.title, "message": c.message,
                       "date": _iso(c.date), "authors": [{"user": USER}]}
                      for c in self.hub.commits(repo_id, rev, repo_type=kind)])

    def _create_repo(self) -> tuple[int, bytes, dict[str, str]]:
        self._token(write=True)
        body = self.json_body()
        kind = body.get("type") or "model"
        repo_id = f"{body.get('organization') or USER}/{body['name']}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        hub = self.hub
        with hub._lock:
            url = f"{hub.endpoint}/{_PREFIX[kind]}{repo_id}"
            if (kind, repo_id) in hub.repos:  # the real Hub also names the url in a 409
                return _json({"error": f"You already created this {kind} repo", "url": url},
                             409)
            hub.create_repo(repo_id, repo_type=kind, private=private)
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def _info(self, kind: str, repo_id: str, revision: str | None,
              query: dict[str, list[str]]) -> tuple[int, bytes, dict[str, str]]:
        hub = self.hub
        repo = self._readable(hub._repo(kind, repo_id))
        commit = hub._commit(repo, revision)
        blobs = _truthy(query.get("blobs", [""])[0])
        siblings = []
        for path in sorted(commit.files):
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = _file_entry(hub, repo, commit, path, False)
                sib.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    sib["lfs"] = {"size": entry["size"], "sha256": entry["lfs"]["oid"],
                                  "pointerSize": entry["lfs"]["pointerSize"]}
            siblings.append(sib)
        data: dict[str, Any] = {
            "_id": hashlib.md5(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo_id, "author": repo_id.split("/")[0], "sha": commit.oid,
            "lastModified": _iso(commit.date), "createdAt": _iso(repo.created),
            "private": repo.private, "disabled": False, "gated": False, "downloads": 0,
            "likes": 0, "tags": [], "siblings": siblings,
            "usedStorage": sum(len(d) for d in commit.files.values()),
        }
        if kind == "space":
            data.update(sdk="static", runtime={"stage": "RUNNING", "hardware": {}})
        return _json(data)

    def _tree(self, kind: str, repo_id: str, revision: str, path: str,
              query: dict[str, list[str]]) -> tuple[int, bytes, dict[str, str]]:
        hub = self.hub
        repo = self._readable(hub._repo(kind, repo_id))
        commit = hub._commit(repo, revision)
        recursive = _truthy(query.get("recursive", [""])[0])
        expand = _truthy(query.get("expand", [""])[0])
        path = path.strip("/")
        dirs = _dirs(commit.files)
        if path and path not in dirs:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"",
                           {"X-Repo-Commit": commit.oid})
        prefix = path + "/" if path else ""

        def wanted(p: str) -> bool:
            if not p.startswith(prefix):
                return False
            return recursive or "/" not in p[len(prefix):]

        out = [_dir_entry(hub, repo, commit, d, expand) for d in sorted(dirs) if wanted(d)]
        out += [_file_entry(hub, repo, commit, f, expand) for f in sorted(commit.files)
                if wanted(f)]
        return _json(out)

    def _paths_info(self, kind: str, repo_id: str,
                    revision: str) -> tuple[int, bytes, dict[str, str]]:
        hub = self.hub
        repo = self._readable(hub._repo(kind, repo_id))
        commit = hub._commit(repo, revision)
        raw = self.body.decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            form = json.loads(raw or "{}")
            paths, expand = form.get("paths", []), bool(form.get("expand"))
        else:
            form = parse_qs(raw)
            paths, expand = form.get("paths", []), _truthy(form.get("expand", [""])[0])
        dirs = _dirs(commit.files)
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(_file_entry(hub, repo, commit, p, expand))
            elif p in dirs:
                out.append(_dir_entry(hub, repo, commit, p, expand))
        return _json(out)

    def _refs(self, kind: str, repo_id: str) -> tuple[int, bytes, dict[str, str]]:
        repo = self._readable(self.hub._repo(kind, repo_id))
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
                    for n, o in sorted(repo.branches.items()) if not n.startswith("refs/pr/")]
        prs = [{"name": n, "ref": n, "targetCommit": o}
               for n, o in sorted(repo.branches.items()) if n.startswith("refs/pr/")]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": o}
                for n, o in sorted(repo.tags.items())]
        return _json({"branches": branches, "converts": [], "tags": tags, "pullRequests": prs})

    def _preupload(self, kind: str, repo_id: str,
                   revision: str) -> tuple[int, bytes, dict[str, str]]:
        self._token(write=True)
        hub = self.hub
        repo = hub._repo(kind, repo_id)
        commit = hub._commit(repo, revision)
        files = []
        for f in self.json_body().get("files", []):
            path = f["path"]
            existing = commit.files.get(path)
            files.append({"path": path, "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_sha1(existing) if existing is not None else None})
        return _json({"files": files, "commitOid": commit.oid})

    def _commit(self, kind: str, repo_id: str, revision: str,
                query: dict[str, list[str]]) -> tuple[int, bytes, dict[str, str]]:
        self._token(write=True)
        hub = self.hub
        repo = hub._repo(kind, repo_id)
        if revision not in repo.branches and hub._commit(repo, revision):
            raise HubError(400, None, f"Cannot commit to {revision}: not a branch")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((ln["value"] for ln in lines if ln.get("key") == "header"), {})
        base = repo.commits[repo.branches[revision]]
        parent_commit = header.get("parentCommit")
        if parent_commit is not None and parent_commit != base.oid:
            raise HubError(412, None, "A commit has happened since. Please refresh and try again.")
        files, lfs = dict(base.files), set(base.lfs)
        for line in lines:
            _apply_operation(hub, files, lfs, line.get("key"), line.get("value", {}))
        target = revision
        pr_url = None
        if _truthy(query.get("create_pr", [""])[0]):
            num = repo.next_pr
            repo.next_pr += 1
            target = f"refs/pr/{num}"
            pr_url = f"{hub.endpoint}/{_PREFIX[kind]}{repo_id}/discussions/{num}"
        commit = hub._new_commit(repo, base.oid, files, frozenset(lfs),
                                 header.get("summary") or "Commit", header.get("description", ""))
        repo.branches[target] = commit.oid
        return _json({"success": True, "commitOid": commit.oid,
                      "commitUrl": f"{hub.endpoint}/{_PREFIX[kind]}{repo_id}/commit/{commit.oid}",
                      "hookOutput": "", "pullRequestUrl": pr_url})

    def _branch(self, kind: str, repo_id: str, branch: str) -> tuple[int, bytes, dict[str, str]]:
        self._token(write=True)
        hub = self.hub
        repo = hub._repo(kind, repo_id)
        if self.command == "DELETE":
            if branch not in repo.branches:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            del repo.branches[branch]
            return _json({})
        if branch in repo.branches:
            raise HubError(409, None, "Reference already exists")
        body = self.json_body()
        repo.branches[branch] = hub._commit(repo, body.get("startingPoint")).oid
        return _json({})

    def _tag(self, kind: str, repo_id: str, revision: str) -> tuple[int, bytes, dict[str, str]]:
        self._token(write=True)
        hub = self.hub
        repo = hub._repo(kind, repo_id)
        tag = self.json_body()["tag"]
        if tag in repo.tags:
            raise HubError(409, None, "Tag already exists")
        repo.tags[tag] = hub._commit(repo, revision).oid
        return _json({})

    # /resolve -----------------------------------------------------------------
    def _resolve(self, kind: str, repo_id: str, revision: str,
                 path: str) -> tuple[int, bytes, dict[str, str]]:
        hub = self.hub
        with hub._lock:
            repo = self._readable(hub._repo(kind, repo_id))
            commit = hub._commit(repo, revision)
            if path not in commit.files:
                raise HubError(404, "EntryNotFound", f"Entry not found: {path}",
                               {"X-Repo-Commit": commit.oid})
            data = commit.files[path]
            name = quote(path.split("/")[-1])
            headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream",
                       "Content-Disposition": f"inline; filename*=UTF-8''{name}"}
            if path in repo.pointers:
                data = _lfs_pointer(data)
                headers["ETag"] = f'"{git_blob_sha1(data)}"'
            elif path in commit.lfs:
                sha = hashlib.sha256(data).hexdigest()
                headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"',
                                "X-Linked-Size": str(len(data))})
            else:
                headers["ETag"] = f'"{git_blob_sha1(data)}"'
        rng = self.headers.get("Range")
        if rng:
            from servers import _parse_range

            span = _parse_range(rng, len(data))
            if span is None:
                return 416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"}
            start, end = span
            return 206, data[start:end + 1], {**headers,
                                              "Content-Range": f"bytes {start}-{end}/{len(data)}"}
        return 200, data, headers

    # body helpers ---------------------------------------------------------------
    body: bytes

    def json_body(self) -> dict[str, Any]:
        return json.loads(self.body or b"{}")


def _apply_operation(hub: HubServer, files: dict[str, bytes], lfs: set[str], key: str | None,
                     value: dict[str, Any]) -> None:
    """Apply one NDJSON commit line to the snapshot ``files`` (and the set of LFS paths)."""
    if key == "header":
        return
    if key == "file":
        path = _check_path(value["path"])
        files[path] = base64.b64decode(value["content"])
        lfs.discard(path)
    elif key == "lfsFile":
        path = _check_path(value["path"])
        data = hub.lfs_objects.get(value["oid"])
        if data is None:
            raise HubError(422, None, f"LFS object {value['oid']} not found for {path}")
        files[path] = data
        lfs.add(path)
    elif key == "deletedFile":
        if value["path"] not in files:
            raise HubError(404, "EntryNotFound",
                           f"A file with this name doesn't exist: {value['path']}")
        del files[value["path"]]
    elif key == "deletedFolder":
        folder = value["path"].rstrip("/")
        gone = [p for p in files if p.startswith(folder + "/")]
        if not gone:
            raise HubError(404, "EntryNotFound", f"A folder with this name doesn't exist: {folder}")
        for p in gone:
            del files[p]
    else:
        raise HubError(400, None, f"Unknown commit operation {key!r}")


def _json(value: Any, status: int = 200) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(value).encode(), {"Content-Type": "application/json"}


def _make_handler() -> type:
    from servers import _Handler

    class Handler(_HubHandlerMixin, _Handler):
        def do_GET(self) -> None:
            self._handle()

        do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

        def _handle(self) -> None:
            self.hub = self.server.owner  # type: ignore[attr-defined]
            self.body = self.read_body()
            head = self.command == "HEAD"
            try:
                status, data, headers = self.route()
            except HubError as e:
                status = e.status
                data = json.dumps({"error": e.message}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Message": e.message,
                           **({"X-Error-Code": e.code} if e.code else {}), **e.headers}
            except LookupError:
                self.hub.unhandled.append((self.command, self.path))
                status, data = 404, b'{"error": "Not Found"}'
                headers = {"Content-Type": "application/json", "X-Error-Message": "Not Found"}
            except (ValueError, KeyError) as e:
                status, data = 400, json.dumps({"error": f"Bad request: {e}"}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Message": str(e)}
            self.hub.requests.append((self.command, self.path, status))
            self.send_bytes(status, data, headers, head=head)

    return Handler


_HANDLER: list[type] = []


def _handler_class() -> type:
    """The handler class, built on first use (servers.py imports this module, and vice versa)."""
    if not _HANDLER:
        _HANDLER.append(_make_handler())
    return _HANDLER[0]


@pytest.fixture
def hf_hub() -> Iterator[HubServer]:
    """A fresh, empty in-memory Hub on 127.0.0.1 (see the module docstring)."""
    with HubServer() as hub:
        yield hub
