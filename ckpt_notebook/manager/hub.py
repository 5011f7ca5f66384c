"""Upload a named checkpoint's files, or a folder, to a Hugging Face Hub repo; and decide,
for every interface, whether a copy goes to the Hub or into a store (:func:`plan_copy`).

    ckpt copy resnet-v1 --to hf://me/resnet@main --pattern "*.safetensors"

Goes through huggingface_hub's own upload path (``HfApi.upload_folder``), so endpoints,
tokens and LFS handling are the library's. ``HF_ENDPOINT`` points it elsewhere. The repo (and
the branch, when ``@revision`` names one) must exist: an upload never creates a public repo
by surprise. A dry run lists what would go, from the manifest: nothing is downloaded.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    HubAuthError,
    HubError,
    HubNotFoundError,
    InvalidArgumentError,
    SourceError,
)
from ..storage import Store
from ..types import CheckpointInfo, Progress
from . import copying
from .materializing import MARKER, materialize
from .refs import resolve_ref
from .sources import expand_source, safe_relpath
from .transfers import open_store

__all__ = ["CopyPlan", "CopyTerms", "HubUpload", "hub_target", "parse_hf_url", "plan_copy",
           "upload_to_hub"]


@dataclass
class HubUpload:
    repo_id: str
    revision: str | None
    repo_type: str
    files: list[str] = field(default_factory=list)
    commit: str | None = None
    dry_run: bool = False
    path_in_repo: str = ""

    @property
    def url(self) -> str:
        """``hf://[datasets/|spaces/]owner/repo[/path][@revision]``, as given."""
        kind = {"dataset": "datasets/", "space": "spaces/"}.get(self.repo_type, "")
        sub = f"/{self.path_in_repo}" if self.path_in_repo else ""
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf://{kind}{self.repo_id}{sub}{rev}"

    def __str__(self) -> str:
        where = self.url
        if self.dry_run:
            listing = ", ".join(self.files[:10]) + (" ..." if len(self.files) > 10 else "")
            return f"would upload {len(self.files)} file(s) to {where}: {listing}"
        return f"uploaded {len(self.files)} file(s) to {where} (commit {self.commit})"


_KINDS = {"datasets": "dataset", "spaces": "space", "models": "model"}
_SLASHED_REVISIONS = ("refs/pr/", "refs/convert/")  # revisions that hold '/' themselves


def parse_hf_url(url: str) -> tuple[str, str | None, str, str]:
    """``hf://[datasets/]owner/repo[/sub][@rev]`` -> (repo_id, revision, repo_type, sub).

    The revision may also follow the repo, as huggingface_hub's HfFileSystem spells it:
    ``hf://owner/repo@rev/sub`` (``refs/pr/1`` or ``refs%2Fpr%2F1`` there too).
    """
    from urllib.parse import unquote

    rest = url.removeprefix("hf://").strip("/")
    kind, _, after_kind = rest.partition("/")
    repo_type = _KINDS.get(kind, "model")
    path = after_kind if kind in _KINDS else rest
    if path.count("@") > 1:
        first, second = path.split("@")[:2]
        right = f"hf://{rest[:len(rest) - len(path)]}{first}/{second.partition('/')[2]}@REVISION"
        raise InvalidArgumentError(f"bad Hugging Face URL {url!r}: give one @revision, e.g. "
                                   f"{right}", url=url)
    path, at, revision = path.partition("@")
    parts = path.split("/")
    if len(parts) < 2 or not all(parts[:2]) or (at and not revision):
        raise InvalidArgumentError(f"bad Hugging Face URL {url!r}: use "
                                   "hf://owner/repo[/sub][@revision]", url=url)
    sub = "/".join(parts[2:])
    if at and len(parts) == 2:  # owner/repo@rev[/sub]
        n = 3 if revision.startswith(_SLASHED_REVISIONS) else 1
        pieces = revision.split("/")
        revision, sub = "/".join(pieces[:n]), "/".join(pieces[n:])
    return "/".join(parts[:2]), unquote(revision) if at else None, repo_type, sub.strip("/")


def _selected(files: list[str], patterns: list[str], excludes: list[str]) -> list[str]:
    if patterns:
        files = [f for f in files if any(fnmatch.fnmatch(f, g) for g in patterns)]
    return [f for f in files if not any(fnmatch.fnmatch(f, g) for g in excludes)]


def _folder_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != MARKER)


def _checkpoint_files(store: Store, info: CheckpointInfo) -> list[str]:
    """The files :func:`materialize` writes for a checkpoint, read from its manifest: a files
    checkpoint's own files; for a training state, ``<object>.safetensors`` per object that
    holds tensors, and ``manifest.json``."""
    doc = store.manifest(info.id)
    where = f"checkpoint {info.id}"
    if doc.files:
        return sorted(safe_relpath(rel, where=where) for rel in doc.files)
    names = [safe_relpath(f"{name}.safetensors", where=where)
             for name, obj in doc.objects.items() if obj.tensors]
    return sorted([*names, "manifest.json"])


def upload_to_hub(src: str, url: str, *, store: Store, patterns: list[str] | None = None,
                  excludes: list[str] | None = None, dry_run: bool = False,
                  progress: Progress | None = None, token: str | None = None) -> HubUpload:
    """Upload a folder or a checkpoint's files (materialized first) to ``url``.

    ``patterns`` (any of them) and ``excludes`` (none of them) are globs over the files'
    relative paths; ``dry_run`` returns what would be uploaded without sending anything.
    """
    repo_id, revision, repo_type, sub = parse_hf_url(url)
    patterns, excludes = list(patterns or []), list(excludes or [])
    info = None if os.path.isdir(src) else resolve_ref(store, src)
    planned = _folder_files(Path(src)) if info is None else _checkpoint_files(store, info)
    files = _selected(planned, patterns, excludes)
    if not files:
        raise SourceError(f"nothing to upload from {src!r}: no file matches "
                          f"{patterns or '*'} minus {excludes or 'nothing'}", path=src)
    report = HubUpload(repo_id, revision, repo_type, files, dry_run=dry_run, path_in_repo=sub)
    if dry_run:
        return report
    with tempfile.TemporaryDirectory(prefix="ckpt-hub-") as tmp:
        if info is None:
            folder = Path(src)
        else:
            folder = materialize(info.id, Path(tmp) / info.id, store=store, progress=progress)
        report.commit = _upload(folder, files, repo_id, revision, repo_type, sub, token)
    return report


def _upload(folder: Path, files: list[str], repo_id: str, revision: str | None,
            repo_type: str, sub: str, token: str | None) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    where = HubUpload(repo_id, revision, repo_type, path_in_repo=sub).url
    try:
        result: Any = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, revision=revision,
            path_in_repo=sub or None, allow_patterns=files, ignore_patterns=[MARKER],
            commit_message=f"Upload {len(files)} file(s) with ckpt_notebook",
        )
    except HfHubHTTPError as err:
        raise _hub_error(err, where, repo_id, revision) from err
    return str(getattr(result, "oid", None) or getattr(result, "commit_url", "") or "?")


def _hub_error(err: Exception, where: str, repo_id: str, revision: str | None) -> HubError:
    """huggingface_hub's error as ours: what went wrong and the fix, on one line."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    failed = f"upload to {where} failed"
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(err, RepositoryNotFoundError):
        return HubNotFoundError(
            f"{failed}: the repo {repo_id} does not exist (or this token cannot see it)",
            url=where, hint=f"create it first (`hf repo create {repo_id}`) or check the name "
                            "and HF_TOKEN")
    if isinstance(err, RevisionNotFoundError):
        return HubNotFoundError(f"{failed}: the branch {revision!r} does not exist in "
                                f"{repo_id}", url=where,
                                hint=f"create it first (`hf repo branch create {repo_id} "
                                     f"{revision}`)")
    if status == 401:
        return HubAuthError(f"{failed}: the Hub refused the token (401)", url=where,
                            hint="log in with `hf auth login` or set HF_TOKEN")
    if status == 403:
        return HubAuthError(f"{failed}: this token may not write to {repo_id} (403)",
                            url=where, hint="use a token with write access")
    text = getattr(err, "server_message", None) or str(err)
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return HubError(f"{failed}: {first or type(err).__name__}", url=where)


# -- a copy: into a store, or to the Hub --------------------------------------------------------
@dataclass(frozen=True)
class CopyTerms:
    """How the caller's user names a copy's parameters, for :func:`plan_copy`'s refusals:
    Python keywords (these defaults), or a command line's options."""

    missing_name: str = "copy needs a name for the new checkpoint (name=...)"
    hub: str = "to='hf://owner/repo[@revision]'"
    keys: Mapping[str, str] = field(default_factory=dict)

    def key(self, keyword: str) -> str:
        return self.keys.get(keyword, keyword)


@dataclass(frozen=True)
class CopyPlan:
    """A copy, decided and checked before anything is read: ``run(progress)`` does it.
    ``label`` is what a progress bar says (``copy NAME``, ``upload SRC``)."""

    label: str
    upload: bool
    dry_run: bool
    run: Callable[[Progress | None], CheckpointInfo | HubUpload]


_HUB_ONLY = ("patterns", "excludes", "dry_run", "remote_dir", "repo_type", "revision")


def plan_copy(src: str | os.PathLike[str], to: str | Store | None = None, *,
              name: str | None = None, store: str | Store | None = None,
              patterns: Sequence[str] = (), excludes: Sequence[str] = (),
              dry_run: bool = False, remote_dir: str | None = None,
              repo_type: str | None = None, revision: str | None = None,
              archive_limits: Mapping[str, Any] | None = None,
              open_to: Callable[[str], Store] | None = None,
              terms: CopyTerms = CopyTerms()) -> CopyPlan:
    """Route a copy. ``to="hf://owner/repo[@rev]"`` uploads ``src`` (a folder or a checkpoint
    of ``store``) there, filtered by ``patterns``/``excludes`` (``dry_run`` lists the files),
    into the folder, repo type and revision the URL or ``remote_dir``/``repo_type``/
    ``revision`` give; it takes no ``name``. Anything else copies ``src`` into the named
    checkpoint ``name`` of ``to`` (default: ``store``; a URL opened with ``open_to`` when
    given), and the Hub-only parameters are refused."""
    given = dict(zip(_HUB_ONLY, (patterns, excludes, dry_run, remote_dir, repo_type,
                                 revision), strict=True))
    if not (to is not None and str(to).startswith("hf://")):
        hub_only = [terms.key(k) for k, v in given.items() if v]
        if hub_only:
            verb = "is" if len(hub_only) == 1 else "are"
            raise InvalidArgumentError(f"{', '.join(hub_only)} {verb} for Hub uploads only "
                                       f"({terms.hub})")
        if not name:
            raise InvalidArgumentError(terms.missing_name)
        dest = open_to(to) if open_to is not None and isinstance(to, str) else to
        new_name = name
        return CopyPlan(f"copy {name}", upload=False, dry_run=False, run=lambda progress:
                        copying.copy(src, new_name, to=dest, store=store, progress=progress,
                                     archive_limits=archive_limits))
    if name is not None:
        raise InvalidArgumentError(f"a Hub upload takes no name ({terms.key('name')} is not "
                                   f"used): the files go to {to} as they are", url=str(to))
    url = hub_target(str(to), remote_dir=remote_dir, repo_type=repo_type, revision=revision,
                     terms=terms)
    folder = expand_source(os.fspath(src))
    return CopyPlan(f"upload {src}", upload=True, dry_run=dry_run, run=lambda progress:
                    upload_to_hub(folder, url, store=open_store(store), patterns=list(patterns),
                                  excludes=list(excludes), dry_run=dry_run, progress=progress))


def hub_target(url: str, *, remote_dir: str | None = None, repo_type: str | None = None,
               revision: str | None = None, terms: CopyTerms = CopyTerms()) -> str:
    """``url`` with ``remote_dir``, ``repo_type`` and ``revision`` folded in; one that
    disagrees with the URL is an error naming both."""
    repo_id, url_revision, url_type, sub = parse_hf_url(url)
    kind = url.removeprefix("hf://").strip("/").split("/", 1)[0]
    if repo_type and kind in _KINDS and repo_type != url_type:
        raise InvalidArgumentError(f"{terms.key('repo_type')} {repo_type} disagrees with "
                                   f"{url!r} ({kind}/ names a {url_type} repo)", url=url,
                                   hint="give the repo type once")
    if revision and url_revision and revision != url_revision:
        raise InvalidArgumentError(f"{terms.key('revision')} {revision} disagrees with "
                                   f"@{url_revision} in {url!r}", url=url,
                                   hint="give the revision once")
    folder = (remote_dir or "").strip("/")
    if folder and sub and folder != sub:
        raise InvalidArgumentError(f"{terms.key('remote_dir')} {folder} disagrees with the "
                                   f"folder {sub!r} in {url!r}", url=url,
                                   hint="give the folder once")
    return HubUpload(repo_id, url_revision or revision, repo_type or url_type,
                     path_in_repo=sub or folder).url
