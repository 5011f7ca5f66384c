"""CLI arguments that say where and how to reach things: ``--storage-option KEY=VALUE`` (with
the config file behind it, see :mod:`ckpt_notebook.storage.options`) and the Hub upload
target flags ``--remote-dir``, ``--repo-type``, ``--revision``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..storage import Store

__all__ = ["HUB_FLAGS", "add_hub_arguments", "add_storage_option_arguments", "cli_store",
           "hub_url", "refuse_hub_flags"]

STORAGE_OPTION_HELP = ("an fsspec storage option for the store (and other URLs of its kind): "
                       "KEY=VALUE, VALUE read as JSON when it parses (repeatable; also "
                       "[storage_options.\"URL\"] tables in $CKPT_NOTEBOOK_CONFIG or "
                       "~/.config/ckpt_notebook/config.toml)")
HUB_FLAGS = ("remote_dir", "repo_type", "revision")


def _storage_option(text: str) -> tuple[str, Any]:
    from ..storage.options import parse_storage_option

    try:
        return parse_storage_option(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def add_storage_option_arguments(parser: argparse.ArgumentParser,
                                 common: argparse.ArgumentParser) -> None:
    """``--storage-option`` before the command (``parser``) and after it (``common``)."""
    parser.add_argument("--storage-option", dest="storage_option", action="append",
                        default=[], type=_storage_option, metavar="KEY=VALUE",
                        help=STORAGE_OPTION_HELP)
    common.add_argument("--storage-option", dest="storage_option_after", action="append",
                        default=argparse.SUPPRESS, type=_storage_option, metavar="KEY=VALUE",
                        help=STORAGE_OPTION_HELP)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [*getattr(args, "storage_option", []), *getattr(args, "storage_option_after", [])]
    return dict(pairs)


def cli_store(url: str | None, args: argparse.Namespace) -> Store:
    """The store at ``url`` (``--store``, ``--to``) with the options the flags and the
    config file give it."""
    from ..storage import Store
    from ..storage.backend import resolve_url
    from ..storage.options import load_config, options_for

    resolved = resolve_url(url)
    return Store(resolved, **options_for(resolved, given_options(args), config=load_config()))


# -- Hub uploads ------------------------------------------------------------------------------
def add_hub_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--remote-dir", metavar="DIR",
                   help="hf:// uploads: the folder in the repo (or hf://owner/repo/DIR)")
    p.add_argument("--repo-type", choices=("model", "dataset", "space"),
                   help="hf:// uploads: the kind of repo (or hf://datasets/..., hf://spaces/...)")
    p.add_argument("--revision", metavar="BRANCH",
                   help="hf:// uploads: the branch to commit to (or hf://owner/repo@BRANCH)")


def refuse_hub_flags(args: argparse.Namespace) -> None:
    given = [f"--{f.replace('_', '-')}" for f in HUB_FLAGS if getattr(args, f, None)]
    if given:
        verb = "goes" if len(given) == 1 else "go"
        raise ValueError(f"{', '.join(given)} {verb} with Hub uploads (--to hf://owner/repo)")


def hub_url(args: argparse.Namespace) -> str:
    """``--to`` with ``--remote-dir``, ``--repo-type`` and ``--revision`` folded in; a flag that
    disagrees with the URL is an error naming both."""
    from ..manager.hub import HubUpload, parse_hf_url

    url = args.to
    repo_id, revision, repo_type, sub = parse_hf_url(url)
    kind = url.removeprefix("hf://").strip("/").split("/", 1)[0]
    typed = kind in ("datasets", "spaces", "models")
    if args.repo_type and typed and args.repo_type != repo_type:
        raise ValueError(f"--repo-type {args.repo_type} disagrees with {url!r} ({kind}/ names "
                         f"a {repo_type} repo); give the repo type once")
    if args.revision and revision and args.revision != revision:
        raise ValueError(f"--revision {args.revision} disagrees with @{revision} in {url!r}; "
                         "give the revision once")
    remote_dir = (args.remote_dir or "").strip("/")
    if remote_dir and sub and remote_dir != sub:
        raise ValueError(f"--remote-dir {remote_dir} disagrees with the folder {sub!r} in "
                         f"{url!r}; give the folder once")
    return HubUpload(repo_id, revision or args.revision, args.repo_type or repo_type,
                     path_in_repo=sub or remote_dir).url
