"""Upload a named checkpoint's files, or a folder, to a Hugging Face Hub repo.

    ckpt copy resnet-v1 --to hf://me/resnet@main --pattern "*.safetensors"

Goes through huggingface_hub's own upload path (``HfApi.upload_folder``), so endpoints,
tokens and LFS handling are the library's. ``HF_ENDPOINT`` points it elsewhere.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CkptError
from ..storage import Store
from .copying import MARKER, Progress, materialize
from .refs import resolve_ref

__all__ = ["HubUpload", "parse_hf_url", "upload_to_hub"]


@dataclass
class HubUpload:
    repo_id: str
    revision: str | None
    repo_type: str
    files: list[str] = field(default_factory=list)
    commit: str | None = None
    dry_run: bool = False

    def __str__(self) -> str:
        where = f"hf://{self.repo_id}" + (f"@{self.revision}" if self.revision else "")
        if self.dry_run:
            listing = ", ".join(self.files[:10]) + (" ..." if len(self.files) > 10 else "")
            return f"would upload {len(self.files)} file(s) to {where}: {listing}"
        return f"uploaded {len(self.files)} file(s) to {where} (commit {self.commit})"


def parse_hf_url(url: str) -> tuple[str, str | None, str, str]:
    """``hf://[datasets/]owner/repo[/sub][@rev]`` -> (repo_id, revision, repo_type, sub)."""
    rest = url.removeprefix("hf://").strip("/")
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    parts = rest.split("/")
    repo_type = "model"
    if parts[0] in ("datasets", "spaces", "models"):
        repo_type = {"datasets": "dataset", "spaces": "space", "models": "model"}[parts[0]]
        parts = parts[1:]
    if len(parts) < 2 or not all(parts[:2]):
        raise ValueError(f"bad Hugging Face URL {url!r}: use hf://owner/repo[@revision]")
    return "/".join(parts[:2]), revision, repo_type, "/".join(parts[2:])


def _selected(folder: Path, patterns: list[str], excludes: list[str]) -> list[str]:
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name != MARKER)
    if patterns:
        files = [f for f in files if any(fnmatch.fnmatch(f, g) for g in patterns)]
    return [f for f in files if not any(fnmatch.fnmatch(f, g) for g in excludes)]


def upload_to_hub(src: str, url: str, *, store: Store, patterns: list[str] | None = None,
                  excludes: list[str] | None = None, dry_run: bool = False,
                  progress: Progress | None = None, token: str | None = None) -> HubUpload:
    """Upload a folder or a checkpoint's files (materialized first) to ``url``."""
    repo_id, revision, repo_type, sub = parse_hf_url(url)
    patterns, excludes = list(patterns or []), list(excludes or [])
    with tempfile.TemporaryDirectory(prefix="ckpt-hub-") as tmp:
        if os.path.isdir(src):
            folder = Path(src)
        else:
            info = resolve_ref(store, src)
            folder = materialize(info.id, Path(tmp) / info.id, store=store, progress=progress)
        files = _selected(folder, patterns, excludes)
        if not files:
            raise CkptError(f"nothing to upload from {src!r}: no file matches "
                            f"{patterns or '*'} minus {excludes or 'nothing'}")
        report = HubUpload(repo_id, revision, repo_type, files, dry_run=dry_run)
        if dry_run:
            return report
        report.commit = _upload(folder, files, repo_id, revision, repo_type, sub, token)
    return report


def _upload(folder: Path, files: list[str], repo_id: str, revision: str | None,
            repo_type: str, sub: str, token: str | None) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        result: Any = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, revision=revision,
            path_in_repo=sub or None, allow_patterns=files, ignore_patterns=[MARKER],
            commit_message=f"Upload {len(files)} file(s) with ckpt_notebook",
        )
    except HfHubHTTPError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CkptError(f"upload to hf://{repo_id} failed: {first}") from err
    return str(getattr(result, "oid", None) or getattr(result, "commit_url", "") or "?")
